"""Where a study lives: a SQLite file by default, a database URL shared by many machines, or a
journal file on a shared filesystem."""

from __future__ import annotations

import importlib.util
import os
import random
import re
import time
import warnings

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

RDB_DIALECTS = ("sqlite", "postgresql", "mysql")
EXPECTED = ("expected sqlite:///PATH, postgresql://USER@HOST/DB, mysql://USER@HOST/DB, journal:PATH "
            "or a PATH ending in .log")
SQLITE_TIMEOUT_S = 60
OPEN_ATTEMPTS = 4
_DRIVER_HINTS = {"postgresql": "pip install 'trainmedic[tune]' (it brings psycopg2-binary)",
                 "mysql": "pip install 'trainmedic[tune]' (it brings PyMySQL)"}


def open_storage(url: str | None, default_path: str, *, heartbeat_interval: int = 10, grace_period: int = 30,
                 max_retry: int = 1) -> BaseStorage:
    """The storage `--storage url` names; None means the SQLite file default_path.

    Database storages record a heartbeat every heartbeat_interval seconds while a trial runs; a trial
    whose heartbeat is older than grace_period (its worker was killed) is set to FAIL by the next
    trial any worker starts, and re-queued up to max_retry times. Optuna's journal storage has no
    heartbeat: a killed worker's trial stays RUNNING there."""
    if url is None:
        path = os.path.abspath(default_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        url = f"sqlite:///{path}"
    if url.startswith("journal:") or ("://" not in url and url.endswith(".log")):
        return _journal(url)
    dialect = url.partition("://")[0].partition("+")[0]
    if "://" not in url or dialect not in RDB_DIALECTS:
        raise ValueError(f"--storage {shown(url)!r}: {EXPECTED}")
    try:
        return _rdb(url, dialect, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                    max_retry=max_retry)
    except ImportError as e:
        hint = _DRIVER_HINTS.get(dialect, "install the database driver the URL names")
        raise ImportError(f"--storage {shown(url)!r}: the {dialect} driver is missing "
                          f"({e.__cause__ or e}); {hint}") from e


def _rdb(url: str, dialect: str, heartbeat_interval: int, grace_period: int, max_retry: int) -> RDBStorage:
    """RDBStorage, retried when workers starting together on a fresh database collide creating its
    tables ("already exists" or a unique violation in CREATE TYPE/TABLE or the alembic stamp; the
    loser retries and finds them)."""
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if dialect == "sqlite" else {}

    def connect() -> RDBStorage:
        with warnings.catch_warnings():  # heartbeats and retries are "experimental" since Optuna 2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(_with_driver(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry))

    for _ in range(OPEN_ATTEMPTS - 1):
        try:
            return connect()
        except sqlalchemy.exc.DatabaseError:
            time.sleep(random.uniform(0.1, 0.5))
    try:
        return connect()
    except sqlalchemy.exc.DatabaseError as e:
        raise ValueError(f"--storage {shown(url)!r}: cannot open the database "
                         f"({getattr(e, 'orig', None) or e})") from e


def _with_driver(url: str) -> str:
    """A bare postgresql:// means psycopg 3 to SQLAlchemy 2.1 (psycopg2 to 2.0) and a bare
    mysql:// means mysqlclient; the tune extra installs psycopg2 and PyMySQL (pure Python), so
    name them where they are installed."""
    for bare, module, driver in (("postgresql://", "psycopg2", "postgresql+psycopg2://"),
                                 ("mysql://", "pymysql", "mysql+pymysql://")):
        if url.startswith(bare) and importlib.util.find_spec(module) is not None:
            return driver + url[len(bare):]
    return url


def _journal(url: str) -> JournalStorage:
    path = url.removeprefix("journal:")
    if not path:
        raise ValueError(f"--storage {url!r}: expected journal:PATH")
    return JournalStorage(JournalFileBackend(path))


def shown(url: str) -> str:
    """The URL with its password masked, for messages."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)
