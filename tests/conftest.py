import os
import sys

import pytest

ZOO = os.path.join(os.path.dirname(__file__), "zoo")
sys.path.insert(0, ZOO)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder, so default run directories never litter the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback for the whole session (tests/pg_server.py); skips with the
    reason where none can run."""
    import pg_server

    reason = pg_server.unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL tests need a server: {reason}")
    server = pg_server.PostgresServer(pg_server.find_bin_dir())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mysql_url():
    """A real MySQL server (MariaDB) on loopback for the whole session (tests/mysql_server.py);
    skips with the reason where none can run."""
    import mysql_server

    reason = mysql_server.unavailable_reason()
    if reason:
        pytest.skip(f"MySQL tests need a server: {reason}")
    server = mysql_server.MySQLServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["postgres_url", "mysql_url"])
def database_url(request):
    """Each database server a study can be shared through, in turn."""
    return request.getfixturevalue(request.param)

