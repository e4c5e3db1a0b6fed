"""Sharded jobs (FSDP). FSDP2's ``fully_shard`` (DTensor parameters) and FSDP's
``FullyShardedDataParallel(use_orig_params=True)`` (flat 1-D pieces of the original parameters)
run on CPU with gloo: every rank measures the gradients, weights and updates of the shards it
holds, with no communication, and states norms on the whole parameter's scale (shard norm x
sqrt(parameter size / shard size), ``trainmedic.params.SHARDED_NOTE``); names are the user's
module's (no ``_fsdp_wrapped_module.``); no piece of trainmedic switches itself off; a healthy
job is silent and its weights are bit-identical to the same job unwatched; too high a learning
rate is named. One torchrun job runs every case; names are also tested in-process."""

import json
import os

import pytest
from torch import nn

from _torchrun import needs_gloo, torchrun
from trainmedic.params import ParamTable, user_name


SCRIPT = '''
import math, os, sys, warnings
import numpy as np
import torch, torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
import trainmedic

dist.init_process_group("gloo")
rank = dist.get_rank()
TEACHER = torch.randn(16, 4, generator=torch.Generator().manual_seed(99))
STEPS = {"lr30": 100, "onerow": 30}


def local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def train(case, out=None):
    """The CASE job on this rank: (the net, its monitor, the trainmedic warnings)."""
    torch.manual_seed(0)
    onerow = case == "onerow"                      # a 1-row head: rank 1 holds none of it
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1 if onerow else 4))
    if case in ("fsdp1", "fsdp1flat"):
        model = FullyShardedDataParallel(net, use_orig_params=case == "fsdp1", device_id=torch.device("cpu"),
                                         auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    else:
        for layer in (net[0], net[2]):
            fully_shard(layer)
        model = fully_shard(net)
    opt = torch.optim.SGD(model.parameters(), lr=30.0 if case == "lr30" else 0.1, momentum=0.9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor = out and trainmedic.watch(model, opt, every=5, run_dir=os.path.join(out, case, f"run{rank}"))
        g = torch.Generator().manual_seed(rank)                  # each rank its own batches
        x = torch.randn(512, 16, generator=g)
        y = (x @ TEACHER)[:, :1] if onerow else (x @ TEACHER).argmax(1)
        loss_fn = nn.functional.mse_loss if onerow else nn.functional.cross_entropy
        for i in range(STEPS.get(case, 60)):
            b = slice(32 * (i % 16), 32 * (i % 16 + 1))
            opt.zero_grad()
            loss_fn(model(x[b]), y[b]).backward()
            opt.step()
        if monitor and onerow:
            exact(monitor, model, opt, x, y, loss_fn)
        if monitor:
            monitor.report()
    return net, monitor, [str(w.message) for w in caught if "trainmedic" in str(w.message)]


def exact(monitor, model, opt, x, y, loss_fn):
    """One more step, sampled: each norm is the local shard's norm x sqrt(size / shard size),
    and the shards' norms so stated give the whole parameter's norm (a collective of the test's
    own: trainmedic sends nothing)."""
    params = list(model.parameters())
    with torch.no_grad():
        shard = [local(p).norm() if local(p).numel() else torch.tensor(float("nan")) for p in params]
        scale = [math.sqrt(p.numel() / local(p).numel()) if local(p).numel() else 1.0 for p in params]
        whole = [p.full_tensor().norm() for p in params]
    monitor.updates.due.add(0)
    opt.zero_grad()
    loss_fn(model(x[:32]), y[:32]).backward()
    opt.step()
    _, w, _ = monitor.updates.take(len(monitor.table))
    here = [float(s) * c for s, c in zip(shard, scale)]
    say("onerow", "LOCAL", bool(np.allclose(w, here, rtol=1e-5, equal_nan=True)))
    sq = torch.tensor([0.0 if math.isnan(v) else (v / c) ** 2 for v, c in zip(w, scale)])
    dist.all_reduce(sq)
    say("onerow", "WHOLE", bool(np.allclose(sq.sqrt().numpy(), [float(t) for t in whole], rtol=1e-5)))


def stats(monitor):
    """Per parameter name: which statistics this rank has (g: gradient norm at the last tick,
    w: weight norm and u: update ratio at the last sampled step)."""
    rows = monitor.run.ticks.rows
    sampled = [r for r in rows if r.get("weight_norm") is not None][-1]
    out = {}
    for i in monitor.table.infos:
        out[i.name] = "".join(k for k, v in (("g", rows[-1]["grad_median"]), ("w", sampled["weight_norm"]),
                                             ("u", sampled["update_ratio"])) if np.isfinite(v[i.index]))
    return out


def say(case, kind, value):
    os.write(1, f"RANK {rank} {case} {kind} {value}\\n".encode())


for case in sys.argv[2].split(","):
    if rank == 0:
        print(f"=== {case}", file=sys.stderr, flush=True)
    net, monitor, warned = train(case, sys.argv[1])
    say(case, "FOUND", sorted(f.id for f in monitor.report().findings))
    say(case, "NAMES", [i.name for i in monitor.table.infos])
    say(case, "STATS", stats(monitor))
    say(case, "WARNED", warned)
    if case in ("fsdp2", "fsdp1", "fsdp1flat"):          # the same numbers without trainmedic
        plain, _, _ = train(case)
        same = all(torch.equal(local(a), local(b)) for a, b in zip(net.parameters(), plain.parameters()))
        say(case, "IDENTICAL", same)
    dist.barrier()
dist.barrier()
dist.destroy_process_group()
'''

CASES = ["fsdp2", "lr30", "onerow", "fsdp1", "fsdp1flat"]
NAMES = str(["0.weight", "0.bias", "2.weight", "2.bias"])

@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One torchrun job running every case: per case, rank 0's printed findings, each rank's
    result lines, rank 0's report and its metrics.jsonl lines."""
    folder = tmp_path_factory.mktemp("fsdp")
    (folder / "fsdp.py").write_text(SCRIPT)
    proc = torchrun(folder, "fsdp.py", str(folder / "out"), ",".join(CASES))
    printed = dict(part.split("\n", 1) for part in proc.stderr.split("=== ")[1:])
    lines: dict = {case: {} for case in CASES}
    for line in proc.stdout.splitlines():
        if line.startswith("RANK "):
            _, rank, case, kind, value = line.split(" ", 4)
            lines[case][f"{rank} {kind}"] = value
    cases = {}
    for case in CASES:
        run = folder / "out" / case
        assert sorted(os.listdir(run)) == ["run0"]                       # rank 0 alone writes
        report = json.loads((run / "run0" / "report.json").read_text())
        ticks = [json.loads(t) for t in (run / "run0" / "metrics.jsonl").read_text().splitlines()]
        cases[case] = (printed[case], lines[case], report, ticks)
    return cases


@needs_gloo
@pytest.mark.parametrize("case", ["fsdp2", "fsdp1"])
def test_a_healthy_sharded_job_is_measured_silent_and_unchanged(job, case):
    printed, lines, report, ticks = job[case]
    for rank in (0, 1):
        assert lines[f"{rank} NAMES"] == NAMES                           # the user's names
        assert lines[f"{rank} WARNED"] == "[]"                           # nothing switched off
        assert lines[f"{rank} FOUND"] == "[]"                            # no false alarm
        assert lines[f"{rank} IDENTICAL"] == "True"                      # bit-identical weights
    assert report["run"]["disabled"] == {} and report["findings"] == [] and "ERROR" not in printed
    assert "sqrt(parameter size / shard size)" in report["run"]["sharded_statistics"]
    assert report["run"]["parameters"] == 16 * 32 + 32 + 32 * 4 + 4      # whole sizes, not shards
    # every parameter with elements on the rank has its gradient, weight and update statistics
    # (FSDP's flat shards: rank 0 holds none of the biases, rank 1 some of every parameter)
    expected = {"fsdp2": ("gwu", "gwu"), "fsdp1": ("", "gwu")}[case]
    for rank in (0, 1):
        got = eval(lines[f"{rank} STATS"])
        assert got == {"0.weight": "gwu", "0.bias": expected[rank], "2.weight": "gwu",
                       "2.bias": expected[rank]}, (rank, got)
    assert set(ticks[-1]["layers"]) == {"0", "2"}
    assert all({"grad", "update"} <= set(v) for v in ticks[-1]["layers"].values())


@needs_gloo
def test_fsdp_flat_parameters_are_measured_per_unit_silently_and_unchanged(job):
    """FullyShardedDataParallel(use_orig_params=False): each unit's one flat parameter, named
    after its unit, measured on its shard with the whole flat size; silent and bit-identical."""
    printed, lines, report, _ = job["fsdp1flat"]
    for rank in (0, 1):
        assert lines[f"{rank} WARNED"] == "[]" and lines[f"{rank} FOUND"] == "[]"
        assert lines[f"{rank} IDENTICAL"] == "True"
        assert all(n.endswith("_flat_param") for n in eval(lines[f"{rank} NAMES"])), lines[f"{rank} NAMES"]
    assert report["run"]["disabled"] == {} and report["findings"] == [] and "ERROR" not in printed
    assert report["run"]["parameters"] == 16 * 32 + 32 + 32 * 4 + 4      # whole sizes, not shards


@needs_gloo
def test_a_rank_holding_none_of_a_parameter_measures_the_rest_exactly(job):
    """A 1-row head under fully_shard: rank 1 holds none of it, measures nothing for it and
    raises no alarm; each norm is its shard's scaled to the whole, and the shards' norms so
    stated combine into the whole parameter's norm."""
    printed, lines, report, _ = job["onerow"]
    assert report["run"]["disabled"] == {} and "ERROR" not in printed
    assert eval(lines["0 STATS"]) == {"0.weight": "gwu", "0.bias": "gwu", "2.weight": "gwu", "2.bias": "gwu"}
    assert eval(lines["1 STATS"]) == {"0.weight": "gwu", "0.bias": "gwu", "2.weight": "", "2.bias": ""}
    for rank in (0, 1):
        assert lines[f"{rank} WARNED"] == "[]" and lines[f"{rank} FOUND"] == "[]"
        assert lines[f"{rank} LOCAL"] == lines[f"{rank} WHOLE"] == "True"


@needs_gloo
def test_too_high_a_learning_rate_is_named_in_a_sharded_job(job):
    """SGD at lr 30, as the data-parallel lr30 case: found by every rank, printed once, and no
    rank_divergence (shards are never compared)."""
    printed, lines, report, _ = job["lr30"]
    assert printed.count("trainmedic ERROR learning_rate_too_high") == 1, printed
    for rank in (0, 1):
        assert "learning_rate_too_high" in lines[f"{rank} FOUND"]
        assert lines[f"{rank} WARNED"] == "[]"
    ids = {f["id"] for f in report["findings"]}
    assert "learning_rate_too_high" in ids and "rank_divergence" not in ids
    assert report["run"]["distributed"]["found_by"]["learning_rate_too_high"] == [0, 1]


# -- names, in-process ----------------------------------------------------------------------------

def test_wrapper_path_components_are_left_out_of_names():
    assert user_name("_fsdp_wrapped_module.0._fsdp_wrapped_module.weight") == "0.weight"
    assert user_name("_fsdp_wrapped_module.2._checkpoint_wrapped_module._fsdp_wrapped_module.bias") == "2.bias"
    assert user_name("_fsdp_wrapped_module.0._fsdp_wrapped_module") == "0"
    assert user_name("_fsdp_wrapped_module") == ""
    dp = nn.DataParallel(nn.Sequential(nn.Linear(2, 2)))
    assert user_name("module.0.weight", dp) == "0.weight"               # DP/DDP's own prefix
    own = nn.Sequential()
    own.module = nn.Linear(2, 2)                                        # a user's module named module
    assert user_name("module.weight", own) == "module.weight"


def test_a_data_parallel_model_keeps_its_names():
    table = ParamTable()
    table.add_model(nn.DataParallel(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))))
    assert [i.name for i in table.infos] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert not table.sharded and [i.shape for i in table.infos] == [(3, 2), (3,), (1, 3), (1,)]
