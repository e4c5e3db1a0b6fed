"""`trainmedic tune` and `trainmedic.tune`: values reach an unmodified script by each route,
bad trials are pruned by diagnosis and by Optuna's pruner, workers share one study (SQLite and
a real PostgreSQL server), a killed worker's trial ends FAIL and is retried, and bad input gets
an error naming the argument, the value and what was expected."""

import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

import trainmedic
from trainmedic.cli import main
from trainmedic.search import summarize, tune_script
from trainmedic.search.lr_check import check_lr
from trainmedic.search.routes import plan, script_flags
from trainmedic.search.storage import open_storage
from trainmedic.search.trial import PRUNE_ON, PRUNER

SCRIPT = '''\
"""A small classifier: argparse flags, SGD, DataLoaders, a validation loss every epoch."""
import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--hidden-units", dest="hidden", type=int, default=16)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()

torch.manual_seed(0)
x = torch.randn(512, 8)
y = (x[:, 0] + x[:, 1] > 0).long()
train = DataLoader(TensorDataset(x[:384], y[:384]), batch_size=32, shuffle=True)
val = DataLoader(TensorDataset(x[384:], y[384:]), batch_size=64)
model = nn.Sequential(nn.Linear(8, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
print(f"USED hidden={args.hidden} lr={opt.param_groups[0]['lr']} batch_size={train.batch_size}")
for epoch in range(args.epochs):
    model.train()
    for xb, yb in train:
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    time.sleep(args.sleep)
    model.eval()
    with torch.no_grad():
        for xb, yb in val:
            nn.functional.cross_entropy(model(xb), yb)
'''


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return str(path)


def used(trial):
    """What the script printed it trained with, from the trial's output."""
    with open(os.path.join(trial.user_attrs["run_dir"], "output.txt")) as fh:
        line = next(ln for ln in fh if ln.startswith("USED"))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.e+-]+)", line)}


def test_routes_are_planned_from_the_script_source(script):
    with open(script) as fh:
        source = fh.read()
    assert script_flags(source) == {"epochs": "--epochs", "hidden": "--hidden-units", "sleep": "--sleep"}
    assert plan(["hidden", "lr", "momentum", "batch_size"], source) == {
        "hidden": "argparse", "lr": "optimizer", "momentum": "optimizer", "batch_size": "DataLoader"}
    with pytest.raises(ValueError, match=r"--param dropout: no route.*--hidden-units.*weight_decay.*batch_size"):
        plan(["dropout"], source)


def test_every_route_reaches_the_script(script, tmp_path):
    result = tune_script(script, [], ["hidden=choice:4,32", "lr=log:1e-3:1e-1", "batch_size=choice:16,64"],
                         trials=4, metric="val_loss", sampler="random", seed=1, pruner="none",
                         out_dir=str(tmp_path / "out"), echo=lambda m: None)
    trials = result.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    assert len({(t.params["hidden"], t.params["batch_size"]) for t in trials}) > 1
    for t in trials:
        assert used(t) == pytest.approx({"hidden": t.params["hidden"], "lr": t.params["lr"],
                                         "batch_size": t.params["batch_size"]}, rel=1e-6)
        assert t.user_attrs["routes"] == {"hidden": "--hidden-units", "lr": "SGD(lr)",
                                          "batch_size": "DataLoader(batch_size)"}
        # 384 samples: 24 steps an epoch at batch 16, 6 at 64; three epochs
        assert t.user_attrs["steps"] == 3 * 384 // t.params["batch_size"]


def test_a_diverging_trial_is_pruned_by_diagnosis_and_runs_to_the_end_without_it(script, tmp_path):
    def run(diagnosis):
        return tune_script(script, ["--epochs", "6"], ["lr=choice:0.05,200"], trials=2, sampler="grid",
                           metric="val_loss", pruner="none", diagnosis=diagnosis, every=5,
                           out_dir=str(tmp_path / f"d{diagnosis}"), echo=lambda m: None).study
    study = run(True)
    trials = {t.params["lr"]: t for t in study.trials}
    good, bad = trials[0.05], trials[200]
    assert good.state == TrialState.COMPLETE and "pruned_by" not in good.user_attrs
    assert bad.state == TrialState.PRUNED and bad.user_attrs["pruned_by"] in PRUNE_ON
    assert bad.user_attrs["steps"] < good.user_attrs["steps"] / 2
    unpruned = {t.params["lr"]: t for t in run(False).trials}[200]
    assert unpruned.state == TrialState.FAIL           # ran to the end, its val_loss NaN
    assert unpruned.user_attrs["steps"] == good.user_attrs["steps"]
    summary = summarize(study)
    assert summary["pruned_by"] == {bad.user_attrs["pruned_by"]: 1}
    assert summary["steps_saved"] == good.user_attrs["steps"] - bad.user_attrs["steps"]


def test_a_healthy_trial_is_never_pruned_by_diagnosis(script, tmp_path):
    """From a learning rate too low to learn much to one near the edge of stability, in small
    and larger batches: every trial that trains without diverging completes, with no error
    finding; the one that diverges (0.3 in batches of 8) is stopped."""
    study = tune_script(script, ["--epochs", "6"], ["lr=choice:0.001,0.01,0.1,0.3", "batch_size=choice:8,32"],
                        trials=8, sampler="grid", metric="val_loss", pruner="none",
                        out_dir=str(tmp_path / "out"), echo=lambda m: None).study
    trials = {(t.params["lr"], t.params["batch_size"]): t for t in study.trials}
    diverging = trials.pop((0.3, 8))
    assert diverging.state == TrialState.PRUNED and diverging.user_attrs["pruned_by"] in PRUNE_ON
    for params, t in trials.items():
        assert t.state == TrialState.COMPLETE, (params, t.user_attrs.get("pruned_by"))
        assert t.value < 0.69 and not set(t.user_attrs["findings"]) & set(PRUNE_ON), params  # chance: ln 2


def _train(params):
    """A function to tune: watched, its validation accuracy logged each epoch."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=params["lr"])
    monitor = trainmedic.watch(model, opt, every=5, on_finding=lambda f: None)
    acc = 0.0
    for epoch in range(4):
        for i in range(0, 256, 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 32]) * params["scale"], y[i:i + 32]).backward()
            opt.step()
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        monitor.log_val(acc=acc)
    monitor.close()
    return acc


def test_python_api_prunes_by_diagnosis_and_by_the_median_pruner():
    study = trainmedic.tune(_train, {"lr": ("log", 1e-4, 1.0), "scale": [1.0, 1e4]}, n_trials=16,
                            sampler="random", seed=3)
    states = {t.number: t for t in study.trials}
    by_diagnosis = [t for t in states.values() if t.user_attrs.get("pruned_by") in PRUNE_ON]
    by_pruner = [t for t in states.values() if t.user_attrs.get("pruned_by") == PRUNER]
    assert by_diagnosis and all(t.state == TrialState.PRUNED for t in by_diagnosis)
    assert all(t.params["scale"] == 1e4 for t in by_diagnosis)      # logits x1e4 blow the loss up
    assert by_pruner and all(t.state == TrialState.PRUNED for t in by_pruner)
    complete = [t.value for t in states.values() if t.state == TrialState.COMPLETE]
    assert complete and study.best_value == max(complete)
    assert all("MedianPruner" in t.user_attrs["pruned_reason"] for t in by_pruner)
    for t in by_pruner:    # stopped below the median of earlier complete trials at that epoch
        step, value = max(t.intermediate_values.items())
        earlier = [u.intermediate_values[step] for u in study.trials if u.number < t.number
                   and u.state == TrialState.COMPLETE and step in u.intermediate_values]
        assert step < 3 and value < statistics.median(earlier)


@pytest.mark.parametrize("args, expected", [
    (["--param", "lr=log:0:1"], r"lr=log:0:1.*0 < LOW < HIGH"),
    (["--param", "lr=log:1e-3:1", "--sampler", "annealing"], r"--sampler 'annealing'.*grid, random, tpe, gp"),
    (["--param", "lr=log:1e-3:1", "--pruner", "sometimes"], r"--pruner 'sometimes'.*median, hyperband, none"),
    (["--param", "lr=log:1e-3:1", "--metric", "val_f1"], r"--metric='val_f1' was not produced.*val_loss"),
    (["--param", "dropout=float:0:0.5"], r"--param dropout: no route"),
    (["--param", "eps=log:1e-8:1e-6"], r"--param eps: the script never used it"),     # SGD has no eps
    (["--param", "lr=log:1e-3:1", "--storage", "redis://host"], r"--storage 'redis://host'.*expected"),
])
def test_bad_input_names_the_argument_the_value_and_what_was_expected(script, tmp_path, args, expected):
    result = CliRunner().invoke(main, ["tune", "--trials", "1", "--out-dir", str(tmp_path / "o"), *args, script])
    assert result.exit_code == 2, result.output
    assert re.search(expected, result.output.replace("\n", " ")), result.output


def test_python_api_bad_input():
    with pytest.raises(ValueError, match=r"space\['lr'\].*log"):
        trainmedic.tune(_train, {"lr": ("log", 0, 1)}, n_trials=1)
    with pytest.raises(ValueError, match="n_trials=0"):
        trainmedic.tune(_train, {"lr": ("log", 1e-3, 1)}, n_trials=0)


def test_cli_prints_the_best_trials_and_writes_the_reports(script, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["tune", "--param", "lr=choice:0.01,0.1,300", "--sampler", "grid",
                                       "--trials", "3", "--out-dir", str(out), "--html", str(tmp_path / "t.html"),
                                       script])
    assert result.exit_code == 0, result.output
    assert "study 'train' (minimize val_loss): 2 complete, 1 pruned" in result.output
    assert re.search(r"routes: lr -> SGD\(lr\)", result.output)
    summary = json.loads((out / "tune.json").read_text())
    assert sorted(t["params"]["lr"] for t in summary["best"]) == [0.01, 0.1]
    values = [t["value"] for t in summary["best"]]
    assert values == sorted(values)                          # val_loss: the lowest first
    html = (tmp_path / "t.html").read_text()
    assert "Optimisation history" in html and "data:image/png;base64," in html
    assert (out / "tune.html").read_text() == html
    best_lr = summary["best"][0]["params"]["lr"]
    advice = (f"The checkup's LR range test suggests lr {summary['lr_check']['suggested']:.2g} (on the "
              f"script as written); the best trial used {best_lr:.2g}")
    assert advice in result.output and advice in html.replace("&#39;", "'")


def test_the_checkup_suggests_an_lr_once_per_study_without_changing_any_trial(script, tmp_path, monkeypatch):
    from trainmedic.search import study as study_module
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    check = check_lr(script, [], str(tmp_path / "log.txt"))
    assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])
    # the script as written: SGD(lr=0.05, momentum=0.9), batches of 32; the checkup's 20 batches
    assert check["used"]["lr"] == 0.05 and check["used"]["momentum"] == 0.9
    assert check["used"]["batch_size"] == 32 and check["batches"] == 20
    assert 1e-4 < check["suggested"] < 10 and "USED" in (tmp_path / "log.txt").read_text()

    run = dict(trials=3, metric="val_loss", sampler="random", seed=0, pruner="none", echo=lambda m: None)
    space = ["lr=log:1e-3:1e-1", "batch_size=choice:16,64"]
    checked = tune_script(script, [], space, out_dir=str(tmp_path / "a"), **run).study
    assert checked.user_attrs["lr_check"]["suggested"] == pytest.approx(check["suggested"])
    calls = []
    monkeypatch.setattr(study_module, "check_lr", lambda *a: calls.append(a) or {"reason": "not run"})
    unchecked = tune_script(script, [], space, out_dir=str(tmp_path / "b"), **run).study
    assert [(t.params, t.value) for t in unchecked.trials] == [(t.params, t.value) for t in checked.trials]
    tune_script(script, [], space, out_dir=str(tmp_path / "a"), **{**run, "trials": 4})
    assert len(calls) == 1                          # a resumed study keeps its check
    summary = summarize(checked)
    assert summary["lr_check"]["advice"].startswith(
        f"The checkup's LR range test suggests lr {check['suggested']:.2g} (on the script as written: "
        f"batch_size=32); the best trial used {summary['best'][0]['params']['lr']:.2g}, ")
    assert summarize(unchecked)["lr_check"]["advice"] == "The checkup's LR range test did not run: not run."


TWO_LOSSES = """\
import torch
from torch import nn
torch.manual_seed(0)
x = torch.randn(640, 8)
y = (x[:, 0] > 0).long()
model = nn.Linear(8, 2)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for i in range(0, 640, 32):
    out = model(x[i:i + 32])
    penalty = nn.functional.mse_loss(out, torch.zeros_like(out))        # a first loss call
    loss = nn.functional.cross_entropy(out, y[i:i + 32]) + 0.01 * penalty
    opt.zero_grad()
    loss.backward()
    opt.step()
"""


def test_the_lr_check_trains_on_the_last_loss_call_and_leaves_no_hook_behind(tmp_path):
    """Two loss calls a step: the check pairs the last one's function with its target (the
    first one's function with the last one's labels would not run); a script that crashes
    before its first step says so; neither leaves a global hook, a torch function mode, or
    sys.argv and sys.path changed."""
    from torch.nn.modules.module import _global_forward_pre_hooks
    from torch.optim.optimizer import _global_optimizer_pre_hooks
    argv, path = list(sys.argv), list(sys.path)
    hooks = (list(_global_forward_pre_hooks), list(_global_optimizer_pre_hooks))
    two = tmp_path / "two.py"
    two.write_text(TWO_LOSSES)
    check = check_lr(str(two), [], str(tmp_path / "two.txt"))
    assert "suggested" in check, check
    assert check["used"]["lr"] == 1e-3 and check["used"]["batch_size"] == 32 and check["batches"] == 20
    crash = tmp_path / "crash.py"
    crash.write_text("import torch\nraise RuntimeError('no data')\n")
    assert check_lr(str(crash), [], str(tmp_path / "crash.txt")) == {
        "reason": "the script crashed (RuntimeError: no data)"}
    assert (list(_global_forward_pre_hooks), list(_global_optimizer_pre_hooks)) == hooks
    assert torch._C._len_torch_function_stack() == 0
    assert sys.argv == argv and sys.path == path


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "trainmedic.cli", "tune", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_recorded_once(storage_url, name, at_least):
    """Every trial finished, numbered once, with its own run; returns the trials."""
    trials = optuna.load_study(study_name=name, storage=open_storage(storage_url, "")).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= at_least
    dirs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(dirs)) == len(dirs) and all(os.path.isfile(os.path.join(d, "report.json")) for d in dirs)
    return trials


def test_two_workers_share_a_sqlite_study(script, tmp_path):
    proc = _cli("--param", "lr=log:1e-3:1e-1", "--trials", "6", "--workers", "2", "--sampler", "random",
                "--seed", "0", "--out-dir", str(tmp_path / "out"), script, "--sleep", "0.3")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    trials = assert_recorded_once(f"sqlite:///{tmp_path / 'out' / 'study.db'}", "train", 6)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len({t.params["lr"] for t in trials}) == len(trials)      # the workers' seeds differ


def test_three_workers_share_a_postgres_study(script, tmp_path, postgres_url):
    """(MySQL goes through the same open_storage: tests/test_search_storage.py runs both.)"""
    proc = _cli("--param", "lr=log:1e-3:1e-1", "--trials", "9", "--workers", "3", "--storage", postgres_url,
                "--study", "tune-cli-three", "--out-dir", str(tmp_path / "out"), script, "--sleep", "0.4")
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    trials = assert_recorded_once(postgres_url, "tune-cli-three", 9)
    assert len({t.user_attrs["worker"] for t in trials}) == 3


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
def test_a_killed_workers_trial_ends_fail_and_is_run_again(script, tmp_path, postgres_url):
    common = ["--param", "lr=log:1e-3:1e-1", "--storage", postgres_url, "--study", "tune-cli-killed",
              "--grace-period", "2", "--sampler", "random", "--out-dir", str(tmp_path / "out")]
    first = _cli(*common, "--trials", "2", script)
    assert first.wait(timeout=120) == 0
    study = optuna.load_study(study_name="tune-cli-killed", storage=open_storage(postgres_url, ""))
    before = {t.number: t.value for t in study.trials}
    victim = _cli(*common, "--worker", "--trials", "3", script, "--sleep", "30")
    try:
        deadline = time.monotonic() + 60
        while not study.get_trials(states=(TrialState.RUNNING,)):
            assert time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.2)
        [killed] = study.get_trials(states=(TrialState.RUNNING,))
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate()
    time.sleep(3.5)
    last = _cli(*common, "--trials", "4", script)
    output = last.communicate(timeout=120)[0]
    assert last.returncode == 0, output
    trials = assert_recorded_once(postgres_url, "tune-cli-killed", 4)
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert [(t.state, t.params) for t in retries] == [(TrialState.COMPLETE, killed.params)]
    assert {n: trials[n].value for n in before} == before


def test_a_study_is_resumed_with_its_finished_trials(script, tmp_path):
    run = dict(trials=2, metric="val_loss", sampler="random", seed=0, pruner="none",
               out_dir=str(tmp_path / "out"), echo=lambda m: None)
    first = {t.number: (t.params, t.value) for t in tune_script(script, [], ["lr=log:1e-3:1e-1"], **run).study.trials}
    again = tune_script(script, [], ["lr=log:1e-3:1e-1"], **{**run, "trials": 3}).study.trials
    assert len(again) == 3 and {t.number: (t.params, t.value) for t in again[:2]} == first


def test_the_metric_may_be_named_without_its_prefix_and_reaches_the_pruner(script, tmp_path):
    study = tune_script(script, [], ["lr=log:1e-3:1e-1"], trials=2, metric="loss", sampler="random",
                        seed=0, out_dir=str(tmp_path / "out"), echo=lambda m: None).study
    assert study.direction.name == "MINIMIZE"
    for t in study.trials:                           # the report rounds to 6 digits
        assert len(t.intermediate_values) == 3 and t.value == pytest.approx(t.intermediate_values[2], rel=1e-5)


def test_a_finished_study_is_not_run_again(script, tmp_path):
    run = dict(trials=2, sampler="random", seed=0, out_dir=str(tmp_path / "out"), echo=lambda m: None)
    tune_script(script, [], ["lr=log:1e-3:1e-1"], **run)
    assert len(tune_script(script, [], ["lr=log:1e-3:1e-1"], **run).study.trials) == 2


CRASHES = """import sys, torch
if sys.argv[1] == "crash":
    raise RuntimeError("out of memory, say")
if sys.argv[1] == "interrupt":
    raise KeyboardInterrupt
model = torch.nn.Linear(2, 2)
torch.optim.SGD(model.parameters(), lr=0.1)
"""


def test_a_crash_before_any_route_fails_the_trial_and_ctrl_c_ends_the_search(tmp_path):
    script = tmp_path / "crashes.py"
    script.write_text(CRASHES)
    study = tune_script(str(script), ["crash"], ["lr=log:1e-3:1e-1"], trials=2, sampler="random",
                        out_dir=str(tmp_path / "a"), echo=lambda m: None).study
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    with pytest.raises(KeyboardInterrupt):
        tune_script(str(script), ["interrupt"], ["lr=log:1e-3:1e-1"], trials=3, sampler="random",
                    out_dir=str(tmp_path / "b"), echo=lambda m: None)


def test_trainmedics_own_optimizers_keep_their_settings_during_a_trial():
    from trainmedic.checks.base import fresh_optimizer
    from trainmedic.search.routes import Routes
    params = [torch.nn.Parameter(torch.zeros(2))]
    with Routes({"lr": 5.0, "weight_decay": 0.1}, {"lr": "optimizer", "weight_decay": "optimizer"}):
        user = torch.optim.SGD(params, lr=0.01)
        own = fresh_optimizer(user, params, lr=1e-3, weight_decay=0.0)
    assert user.param_groups[0]["lr"] == 5.0 and user.param_groups[0]["weight_decay"] == 0.1
    assert own.param_groups[0]["lr"] == 1e-3 and own.param_groups[0]["weight_decay"] == 0.0


def test_python_api_minimises_a_loss_metric_by_default_and_passes_the_trial_only_when_asked():
    seen = []

    def train(params, epochs=2):                       # a second parameter with a default
        seen.append(epochs)
        return params["x"] ** 2
    study = trainmedic.tune(train, {"x": ("float", -1, 1)}, n_trials=5, metric="val_loss",
                            sampler="random", seed=0)
    assert study.direction.name == "MINIMIZE" and seen == [2] * 5
    got = trainmedic.tune(lambda params, trial: trial.number, {"x": [1, 2]}, n_trials=2)
    assert sorted(t.value for t in got.trials) == [0, 1]
