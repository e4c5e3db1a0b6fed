"""Distributed jobs. A data-parallel job (torchrun, 2 processes, gloo on CPU): every rank measures,
rank 0 alone prints the findings and writes the run directory, so the job gets each finding once
and one report, through watch() and through `trainmedic run`; a bug planted on rank 1 only is
``rank_divergence`` naming rank 1, a healthy job is silent, ranks that stop at different steps
never wait on each other. The rule and the store channel are also tested in-process."""

import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

import trainmedic
from _torchrun import GLOO_EXIT_ABORT, needs_gloo, torchrun
from trainmedic.detectors.distributed import RankDivergence, nonfinite_origin
from trainmedic.distributed import RankLink


SCRIPT = '''
import os, sys
import torch, torch.distributed as dist
from torch import nn
import trainmedic

dist.init_process_group("gloo")
rank = dist.get_rank()
TEACHER = torch.randn(16, 4, generator=torch.Generator().manual_seed(99))


def train(case, out=None):
    """The CASE job on this rank (rank 1 carries the planted bug): (the net, its monitor)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    uneven = case.startswith("uneven")                   # no DDP: the ranks run different lengths
    if case == "fsdp2":
        from torch.distributed.fsdp import fully_shard
        for layer in (net[0], net[2]):
            fully_shard(layer)
        model = fully_shard(net)
    else:
        model = net if uneven else nn.parallel.DistributedDataParallel(net)
    if rank == 1 and case == "stale":                    # resumes a stale checkpoint after wrapping
        torch.manual_seed(1)
        net.load_state_dict(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).state_dict())
    if case == "scaled":                                 # Adam: the same steps at any gradient scale
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=30.0 if case == "lr30" else 0.1, momentum=0.9)
    monitor = out and trainmedic.watch(model, opt, every=5, run_dir=os.path.join(out, case, f"run{rank}"))
    g = torch.Generator().manual_seed(0 if uneven else rank)          # each rank its own shard
    x = torch.randn(512, 16, generator=g)
    y = (x @ TEACHER).argmax(1)
    if rank == 1 and case == "nan":
        x[300] = float("nan")                            # one corrupt sample in rank 1's shard
    if rank == 1 and case == "shuffled":
        y = y[torch.randperm(512, generator=g)]          # rank 1's labels do not match its inputs
    steps = {"uneven": (80, 15), "uneven0": (15, 80), "fsdp2": (30, 30)}.get(case, (100, 100))[rank]
    for i in range(steps):
        b = slice(32 * (i % 16), 32 * (i % 16 + 1))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        if rank == 1 and case == "scaled":               # rank 1 rescales DDP's averaged gradients
            for p in net.parameters():
                p.grad.mul_(100.0)
        opt.step()
    return net, monitor


def say(case, kind, value):
    """One result line in one write: torchrun's unbuffered stdout lets print's text and its
    newline apart, and the two ranks' lines run together."""
    os.write(1, f"RANK {rank} {case} {kind} {value}\\n".encode())


mode, cases = sys.argv[1], sys.argv[2].split(",")
for case in cases:
    if mode == "plain":
        train(case)
        continue
    if rank == 0:
        print(f"=== {case}", file=sys.stderr, flush=True)
    net, monitor = train(case, sys.argv[3])
    say(case, "FOUND", sorted(f.id for f in monitor.report().findings))
    say(case, "NAMES", [i.name for i in monitor.table.infos])
    if case == "clean":                                  # the same numbers without trainmedic
        plain, _ = train(case)
        same = all(torch.equal(a, b) for a, b in zip(net.parameters(), plain.parameters()))
        say(case, "IDENTICAL", same)
    dist.barrier()                                       # the next case starts together
dist.barrier()                                           # both ranks done before the group goes
dist.destroy_process_group()
'''

CASES = ["lr30", "clean", "nan", "shuffled", "scaled", "uneven", "uneven0", "fsdp2"]

def _torchrun(folder, *command):
    """The job COMMAND under torchrun (2 processes) in ``folder``: (stdout, stderr)."""
    (folder / "ddp.py").write_text(SCRIPT)
    proc = torchrun(folder, *command)
    return proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """One job running every case in turn through watch(): per case, rank 0's printed
    findings, each rank's result lines and rank 0's report."""
    folder = tmp_path_factory.mktemp("ddp")
    out, err = _torchrun(folder, "ddp.py", "watch", ",".join(CASES), str(folder / "out"))
    printed = dict(part.split("\n", 1) for part in err.split("=== ")[1:])
    lines: dict = {case: {} for case in CASES}
    for line in out.splitlines():
        if line.startswith("RANK "):
            _, rank, case, kind, value = line.split(" ", 4)
            lines[case][f"{rank} {kind}"] = value
    cases = {}
    for case in CASES:
        assert sorted(os.listdir(folder / "out" / case)) == ["run0"]      # rank 0 alone writes
        report = json.loads((folder / "out" / case / "run0" / "report.json").read_text())
        cases[case] = (printed[case], lines[case], report)
    return cases


def _divergence(report):
    f = next((f for f in report["findings"] if f["id"] == "rank_divergence"), None)
    if f is None:
        return None
    return f["evidence"]["ranks"], [r["reason"] for r in f["evidence"]["by_rank"]["1"]]


@needs_gloo
def test_watch_under_torchrun_prints_each_finding_once_and_rank_0_writes_the_report(watched):
    printed, lines, report = watched["lr30"]
    assert printed.count("trainmedic ERROR learning_rate_too_high") == 1, printed
    for rank in (0, 1):                   # both ranks measured and found it
        assert "learning_rate_too_high" in lines[f"{rank} FOUND"]
    assert report["run"]["rank"] == 0 and "learning_rate_too_high" in {f["id"] for f in report["findings"]}
    dist_info = report["run"]["distributed"]
    assert dist_info["found_by"]["learning_rate_too_high"] == [0, 1] and dist_info["world_size"] == 2
    assert _divergence(report) is None    # every rank diverges alike: no rank differs


@needs_gloo
def test_healthy_job_is_silent_and_its_numbers_unchanged(watched):
    printed, lines, report = watched["clean"]
    assert _divergence(report) is None and "ERROR" not in printed, printed
    assert lines["0 IDENTICAL"] == lines["1 IDENTICAL"] == "True"


@needs_gloo
@pytest.mark.parametrize("case, reason", [("nan", "nonfinite_loss"), ("shuffled", "loss"),
                                          ("scaled", "gradient")])
def test_a_bug_on_rank_1_only_is_named_with_its_rank(watched, case, reason):
    printed, lines, report = watched[case]
    assert printed.count("trainmedic ERROR rank_divergence") == 1, printed
    assert "rank_divergence" not in lines["1 FOUND"]          # rank 0 alone compares
    assert _divergence(report) == ([1], [reason])
    assert report["run"]["distributed"]["found_by"]["rank_divergence"] == [1]
    if case == "nan":     # rank 0's own NaN came from rank 1 through DDP's all-reduce
        causes = {f["id"]: f["caused_by"] for f in report["findings"]}
        assert causes["nonfinite_loss"] == causes["nonfinite_gradient"] == "rank_divergence", causes


@needs_gloo
@pytest.mark.parametrize("case, steps", [("uneven", {"0": 80, "1": 15}), ("uneven0", {"0": 15, "1": 80})])
def test_ranks_that_stop_at_different_steps_never_wait_on_each_other(watched, case, steps):
    """No DDP: rank 1 (then rank 0) stops early and reports while the other trains on; the
    early rank 0 waits (at most FINAL_WAIT) for rank 1's last summary."""
    _, _, report = watched[case]
    assert report["run"]["distributed"]["steps"] == steps and _divergence(report) is None


@needs_gloo
def test_an_fsdp2_job_runs_watched_with_its_parameter_names(watched):
    """fully_shard works on CPU with gloo; its DTensor parameters keep their names, their
    shards are never compared (their statistics: tests/test_fsdp.py)."""
    _, lines, report = watched["fsdp2"]
    for rank in (0, 1):
        assert lines[f"{rank} NAMES"] == str(["0.weight", "0.bias", "2.weight", "2.bias"])
    assert _divergence(report) is None


@needs_gloo
def test_trainmedic_run_under_torchrun_writes_one_report(tmp_path):
    out, err = _torchrun(tmp_path, "-m", "trainmedic.cli", "run", "--no-live", "--run-dir",
                         str(tmp_path / "run"), "ddp.py", "plain", "lr30")
    assert err.count("trainmedic ERROR learning_rate_too_high") == 1, err
    assert (out + err).count("trainmedic summary") == 1, out + err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["run"]["rank"] == 0 and report["run"]["steps"] == 100
    assert _divergence(report) is None


@needs_gloo
def test_trainmedic_run_names_the_rank_that_loaded_other_weights(tmp_path):
    """Rank 1 loads a stale checkpoint after DDP wrapped the model: DDP never syncs the
    parameters again, so rank 1 trains another model."""
    _, err = _torchrun(tmp_path, "-m", "trainmedic.cli", "run", "--no-live", "--run-dir",
                       str(tmp_path / "run"), "ddp.py", "plain", "stale")
    printed = [line for line in err.splitlines() if line.startswith("trainmedic ERROR rank_divergence")]
    assert len(printed) == 1 and "[rank 1]" in printed[0], err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert _divergence(report) == ([1], ["parameters"])


SPAWN = '''
import os, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp
from torch import nn
import trainmedic


def worker(rank, out, port):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(net.parameters(), lr=30.0, momentum=0.9)
    trainmedic.watch(net, opt, every=5, run_dir=os.path.join(out, f"run{rank}"))   # before the group
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = nn.parallel.DistributedDataParallel(net)
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(512, 16, generator=g)
    y = x[:, :4].argmax(1)
    for i in range(60):
        b = slice(32 * (i % 16), 32 * (i % 16 + 1))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    del model         # no barrier: a Reducer freed after one can deadlock gloo's teardown
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
'''


@needs_gloo
def test_mp_spawn_workers_watched_before_their_process_group_print_and_write_once(tmp_path):
    """mp.spawn sets no RANK and the workers call watch() before init_process_group: the first
    tick after it gives each its rank, so rank 1 stays quiet and writes nothing."""
    import socket
    (tmp_path / "spawn.py").write_text(SPAWN)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    for _ in range(3):               # again on gloo's exit abort, or when the free port was taken
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        proc = subprocess.run([sys.executable, "spawn.py", str(tmp_path / "out"), port],
                              env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0 or (GLOO_EXIT_ABORT not in output and "address already in use" not in output.lower()):
            break
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stderr.count("trainmedic ERROR learning_rate_too_high") == 1, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["run0"]
    report = json.loads((tmp_path / "out" / "run0" / "report.json").read_text())
    assert report["run"]["rank"] == 0 and report["run"]["distributed"]["world_size"] == 2


# -- the rule, in-process ---------------------------------------------------------------------

def _summary(rank, step=100, loss=0.5, grad=1.0, weights=(3.0, 1.0, 2.0), **kw):
    return {"rank": rank, "step": step, "ticks": 10, "final": False, "loss": loss, "loss_se": 0.02,
            "loss_start": 1.4, "nonfinite_loss": None, "nonfinite_grad": None, "grad": grad,
            "sample_step": 60, "weights": None if weights is None else np.array(weights, np.float32),
            "shapes": 7, "sharded": False, "ddp": True, "adversarial": False, "findings": [],
            "errors": [], "diverged": None, **kw}


NAMES = ["0.weight", "0.bias", "2.weight"]


def _judge(*summaries):
    own, *peers = summaries
    return RankDivergence().evaluate({own["step"]: own}, {s["rank"]: s for s in peers}, NAMES)


def test_rule_is_silent_on_healthy_data_parallel_ranks():
    """Different shards: losses differ by noise, gradients and parameters are the same."""
    assert _judge(_summary(0, loss=0.52), _summary(1, loss=0.47), _summary(2, loss=0.61),
                  _summary(3, loss=0.55)) is None
    # a loss gap the size of the batch noise, and losses that grow alike (too high a learning rate)
    assert _judge(_summary(0, loss=0.3), _summary(1, loss=0.8, loss_se=0.2)) is None
    assert _judge(_summary(0, loss=3.0), _summary(1, loss=9.0)) is None


def test_rule_names_the_rank_with_other_parameters():
    v = _judge(_summary(0), _summary(1), _summary(2, weights=(3.0, 1.0, 2.5)))
    assert v.where == "rank 2" and v.evidence["by_rank"]["2"][0]["parameter"] == "2.weight"
    assert "its parameters differ from rank 0's" in v.message
    v = _judge(_summary(0, weights=(3.0, 1.0, 2.5)), _summary(1), _summary(2))
    assert v.where == "rank 0"                       # the ranks that agree are the reference
    assert _judge(_summary(0), _summary(1, weights=(3.0, 1.0, 2.0000001))) is None      # float noise
    # shards of one model (FSDP), or models of other shapes (pipeline stages): not compared
    assert _judge(_summary(0, sharded=True), _summary(1, weights=(1.0, 1.0, 1.0), sharded=True)) is None
    assert _judge(_summary(0), _summary(1, weights=(1.0, 1.0), shapes=8)) is None


def test_rule_names_the_rank_whose_loss_or_gradient_is_off():
    v = _judge(_summary(0, loss=0.7), _summary(1, loss=1.5))
    assert v.where == "rank 1" and v.evidence["by_rank"]["1"][0]["reason"] == "loss"
    v = _judge(_summary(0), _summary(1, grad=30.0), _summary(2))
    assert v.where == "rank 1" and v.evidence["by_rank"]["1"][0]["reason"] == "gradient"
    assert _judge(_summary(0), _summary(1, grad=3.0)) is None
    # shards of one model (FSDP) or pipeline stages: their gradients differ by design
    assert _judge(_summary(0, sharded=True), _summary(1, grad=30.0, sharded=True)) is None
    assert _judge(_summary(0), _summary(1, grad=30.0, shapes=8)) is None


def test_rule_names_the_rank_where_nan_appeared_first():
    """DDP spreads a NaN gradient to every rank in its step: the rank whose loss was NaN first
    is the origin, decided once every running rank has gone past that step."""
    latest = {0: _summary(0, nonfinite_loss=10, nonfinite_grad=9),
              1: _summary(1, nonfinite_loss=9, nonfinite_grad=9)}
    assert list(nonfinite_origin(latest)) == [1]
    latest[0]["nonfinite_loss"] = 9                  # the same step everywhere: a shared cause
    assert nonfinite_origin(latest) == {}
    latest = {0: _summary(0, step=9), 1: _summary(1, nonfinite_loss=9)}
    assert nonfinite_origin(latest) == {}            # rank 0 has not reached step 9 yet
    latest[0]["step"] = 10
    assert list(nonfinite_origin(latest)) == [1]
    latest[2] = _summary(2, step=5, final=True)      # a rank that stopped earlier does not count
    assert list(nonfinite_origin(latest)) == [1]
    # a job whose loss diverged on every rank (too high a learning rate): the first rank to reach
    # NaN is no origin; one whose loss diverged only at the NaN step still is, and gradient or
    # update findings (all-reduced: the same on every rank) do not tell
    latest = {0: _summary(0, nonfinite_loss=10, diverged=6), 1: _summary(1, nonfinite_loss=9)}
    assert nonfinite_origin(latest) == {}
    latest[0]["diverged"] = 9
    assert list(nonfinite_origin(latest)) == [1]
    latest[0].update(diverged=None, errors=[{"id": "exploding_gradient", "step": 5}])
    assert list(nonfinite_origin(latest)) == [1]


def test_a_verdict_stands_while_the_rank_cannot_be_compared():
    rule = RankDivergence()
    own = {100: _summary(0)}
    assert rule.evaluate(own, {1: _summary(1, weights=(9.0, 1.0, 2.0))}, NAMES) is not None
    own = {200: _summary(0, step=200)}             # rank 1 stopped at step 100
    assert rule.evaluate(own, {1: _summary(1, weights=(9.0, 1.0, 2.0))}, NAMES).where == "rank 1"


# -- the channel, in-process --------------------------------------------------------------------

def test_the_store_channel_never_waits_for_a_rank(monkeypatch):
    monkeypatch.setattr("trainmedic.distributed.FINAL_WAIT", 0.5)
    store = dist.HashStore()
    zero, one = RankLink(store, "t/", 0, 2), RankLink(store, "t/", 1, 2)
    started = time.monotonic()
    assert zero.read() == {} and zero.read_final() == {}    # rank 1 never published: no wait
    one.publish(_summary(1))
    assert zero.read()[1]["loss"] == 0.5 and list(zero.read()[1]["weights"]) == [3.0, 1.0, 2.0]
    assert time.monotonic() - started < 1
    started = time.monotonic()
    assert zero.read_final()[1]["final"] is False          # heard from, never final: bounded wait
    assert 0.5 <= time.monotonic() - started < 1.5
    one.publish(_summary(1, final=True))
    assert zero.read_final()[1]["final"] is True


class _BrokenStore:
    def __getattr__(self, name):
        raise RuntimeError("store unreachable")


def test_a_failing_store_switches_the_piece_off_with_one_warning(monkeypatch):
    monkeypatch.setattr(RankLink, "connect",
                        classmethod(lambda cls, name, rank: cls(_BrokenStore(), "t/", rank, 2)))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor = trainmedic.watch(model, opt, every=2)
        for _ in range(10):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
        report = monitor.report()
    mine = [w for w in caught if "distributed statistics" in str(w.message)]
    assert len(mine) == 1 and "distributed statistics" in report.run["disabled"]
    assert math.isfinite(model.weight.sum().item())
