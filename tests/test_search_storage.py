"""Studies live in a SQLite file by default, in a database URL shared by workers (a real PostgreSQL
server here, and a MySQL one: MariaDB), or in a journal file: every trial is recorded once, a killed worker's trial ends
FAIL and is retried, finished trials survive reopening, and optuna-dashboard shows what
`trainmedic tune` wrote."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import optuna
import pytest
from click.testing import CliRunner
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from trainmedic.cli import main
from trainmedic.search.storage import open_storage
from trainmedic.search.trial import PRUNE_ON

optuna.logging.set_verbosity(optuna.logging.WARNING)
HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 2}

WORKER = textwrap.dedent("""
    import sys, time
    import optuna
    from trainmedic.search.storage import open_storage
    url, study_name, n_trials, sleep_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, "unused.db", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        time.sleep(sleep_s)
        return x
    study.optimize(objective, n_trials=n_trials)
""")


def start_workers(url, study_name, count, n_trials, sleep_s=0.0):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", WORKER, url, study_name, str(n_trials), str(sleep_s)],
                             env=env, stderr=subprocess.PIPE, text=True) for _ in range(count)]


def finish(workers):
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err


def objective(trial):
    return trial.suggest_float("x", 0, 1)


def assert_recorded_once(url, study_name, n):
    trials = optuna.load_study(study_name=study_name, storage=open_storage(url, "")).get_trials()
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_default_is_a_sqlite_file_that_keeps_finished_trials(tmp_path):
    path = tmp_path / "out" / "study.db"
    storage = open_storage(None, str(path))
    assert isinstance(storage, RDBStorage) and path.is_file()
    assert (storage.heartbeat_interval, storage.grace_period) == (10, 30)
    assert isinstance(storage.heartbeat_stale_trial_callback, RetryHeartbeatStaleTrialCallback)
    optuna.create_study(study_name="s", storage=storage).optimize(objective, n_trials=3)
    values = [t.value for t in optuna.load_study(study_name="s", storage=open_storage(None, str(path))).trials]
    assert len(values) == 3 and None not in values


@pytest.mark.parametrize("url, expected", [
    ("redis://localhost:6379", "expected sqlite:///PATH, postgresql://USER@HOST/DB"),
    ("postgres://me:secret@db/x", "expected sqlite:///PATH, postgresql://USER@HOST/DB"),
    ("study.db", "a PATH ending in .log"),
    ("journal:", "expected journal:PATH"),
])
def test_bad_storage_names_the_argument_and_what_is_expected(url, expected):
    with pytest.raises(ValueError) as error:
        open_storage(url, "unused.db")
    shown = url.replace("secret", "***")
    assert str(error.value).startswith(f"--storage {shown!r}: ") and expected in str(error.value)
    assert "secret" not in str(error.value)


def test_missing_postgres_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r"--storage 'postgresql://me:\*\*\*@127\.0\.0\.1:1/x': the postgresql "
                                          r"driver is missing .*pip install 'trainmedic\[tune\]'"):
        open_storage("postgresql://me:pw@127.0.0.1:1/x", "unused.db")


def test_two_workers_share_a_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    finish(start_workers(url, "shared", count=2, n_trials=8))
    assert_recorded_once(url, "shared", 16)


def test_journal_file_records_trials(tmp_path):
    path = str(tmp_path / "study.log")
    storage = open_storage(path, "unused.db")
    assert isinstance(storage, JournalStorage)
    optuna.create_study(study_name="j", storage=storage).optimize(objective, n_trials=3)
    assert_recorded_once(f"journal:{path}", "j", 3)


def test_three_workers_share_a_database_study(database_url):
    finish(start_workers(database_url, "three", count=3, n_trials=5))
    assert_recorded_once(database_url, "three", 15)


def wait_for_running_trial(study, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.params]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("the worker never started its trial")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
def test_killed_worker_trial_ends_fail_and_is_retried(database_url):
    study = optuna.create_study(study_name="killed", storage=open_storage(database_url, "", **HEARTBEAT))
    study.optimize(objective, n_trials=3)
    finished = {t.number: t.value for t in study.trials}
    [victim] = start_workers(database_url, "killed", count=1, n_trials=1, sleep_s=120)
    try:
        killed = wait_for_running_trial(study)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate()
    time.sleep(HEARTBEAT["grace_period"] + 1.5)
    study.optimize(objective, n_trials=2)  # the next worker's first trial finds the stale one

    trials = study.get_trials()
    assert len(trials) == 6
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert [(t.state, t.params) for t in retries] == [(TrialState.COMPLETE, killed.params)]
    assert {n: trials[n].value for n in finished} == finished
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5


TRAIN = textwrap.dedent("""
    import torch
    from torch import nn
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(4):
        for i in range(0, 192, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 16]), y[i:i + 16]).backward()
            opt.step()
        with torch.no_grad():
            nn.functional.cross_entropy(model(x[192:]), y[192:])
""")


def get_json(url, timeout_s=60.0, proc=None):
    """GET ``url`` as JSON, retried until the server answers (and while ``proc`` lives)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError):
            assert proc is None or proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, f"no answer from {url}"
            time.sleep(0.2)


def test_optuna_dashboard_shows_the_study_trainmedic_tune_wrote(tmp_path):
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install optuna-dashboard)")
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["tune", "--param", "lr=choice:0.05,500", "--sampler", "grid",
                                       "--trials", "2", "--pruner", "none", "--every", "5",
                                       "--out-dir", str(out), str(script)])
    assert result.exit_code == 0, result.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable))
    proc = subprocess.Popen([exe, f"sqlite:///{out / 'study.db'}", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        api = f"http://127.0.0.1:{port}/api/studies"
        [study] = get_json(api, proc=proc)["study_summaries"]
        assert study["study_name"] == "train" and study["directions"] == ["minimize"]
        study_attrs = {a["key"]: json.loads(a["value"]) for a in study["user_attrs"]}
        assert study_attrs["settings"]["params"] == ["lr=choice:0.05,500"] and "suggested" in study_attrs["lr_check"]
        detail = get_json(f"{api}/{study['study_id']}")
        trials = {float(t["params"][0]["param_external_value"]): t for t in detail["trials"]}
        good, bad = trials[0.05], trials[500.0]
        attrs = {n: {a["key"]: a["value"] for a in t["user_attrs"]} for n, t in trials.items()}
        assert good["state"] == "Complete" and len(good["intermediate_values"]) == 4
        assert attrs[0.05]["steps"] == "48" and attrs[0.05]["routes"] == '{"lr": "SGD(lr)"}'
        assert bad["state"] == "Pruned" and attrs[500.0]["pruned_by"] in PRUNE_ON
        assert int(attrs[500.0]["steps"]) < 48 and os.path.isdir(attrs[500.0]["run_dir"])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
