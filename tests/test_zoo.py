"""The fault zoo: every planted bug is named as the root cause, with no unrelated error beside
it; clean programs report no warning or error. Each program runs through watch() and through
the zero-code runner."""

import contextlib
import glob
import importlib
import io
import os

import pytest

import trainmedic
from trainmedic.findings import ordered
from trainmedic.runner import run_script

from conftest import ZOO

PROGRAMS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ZOO, "*.py"))
                  if not os.path.basename(p).startswith("_"))
BUGS = [p for p in PROGRAMS if p.startswith("bug_")]
CLEAN = [p for p in PROGRAMS if p.startswith("clean_")]


def _check(name, report):
    """Clean programs: no warning or error, not even one resolved later. Planted bugs: the
    root cause (EXPECT) is named first, the ids in ALSO appear too, and every other error
    follows from the root cause."""
    mod = importlib.import_module(name)
    expect, also = mod.EXPECT, getattr(mod, "ALSO", ())
    serious = [f"{f.id} ({f.severity.value}): {f.message}" for f in report.at_least("warning")]
    if expect is None:
        assert serious == [], f"clean program {name} raised findings"
        return
    ranked = ordered(report.findings)
    assert ranked and ranked[0].id == expect, \
        f"{name}: expected root cause {expect} first, got {[(f.id, f.caused_by) for f in ranked]}"
    for extra in also:
        assert extra in report.ids(), f"{name}: expected {extra} as well, got {report.ids()}"
    by_id = {f.id: f for f in report.findings}

    def follows(f):
        seen = set()
        while f is not None and f.id not in seen:
            if f.id == expect:
                return True
            seen.add(f.id)
            f = by_id.get(f.caused_by)
        return False
    unrelated = [f.id for f in report.at_least("error") if f.id not in also and not follows(f)]
    assert unrelated == [], f"{name}: unrelated errors {unrelated} beside {expect}"


def test_zoo_covers_every_detector_and_enough_clean_programs():
    from trainmedic.detectors import default_detectors
    planted = {i for b in BUGS for i in (importlib.import_module(b).EXPECT,
                                         *getattr(importlib.import_module(b), "ALSO", ()))}
    assert {d.id for d in default_detectors()} <= planted
    assert len(CLEAN) >= 25
    # the data-pipeline and structural faults found at run time: two programs each, in
    # different architectures
    expects = [importlib.import_module(b).EXPECT for b in BUGS]
    for fault in ("class_imbalance", "unshuffled_data", "train_val_leakage", "preprocessing_mismatch",
                  "target_not_normalized", "batch_mixing", "frozen_random_layers", "label_noise",
                  "regularization_dominates", "saturated_activation", "learning_rate_too_high"):
        assert expects.count(fault) >= 2, fault


@pytest.mark.parametrize("name", PROGRAMS)
def test_watch(name, tmp_path):
    """The diagnosis, and the program's own output unchanged by watching it (bit-identical
    printed numbers)."""
    mod = importlib.import_module(name)
    goal = getattr(mod, "GOAL", None)
    plain, watched = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(plain):
        mod.main()
    with contextlib.redirect_stdout(watched):
        monitor = mod.main(watch=lambda m, o: trainmedic.watch(m, o, run_dir=tmp_path, goal=goal,
                                                               on_finding=lambda f: None))
        report = monitor.report()
    _check(name, report)
    assert watched.getvalue() == plain.getvalue()


@pytest.mark.parametrize("name", PROGRAMS)
def test_runner(name, tmp_path, capsys):
    goal = getattr(importlib.import_module(name), "GOAL", None)
    code = run_script(os.path.join(ZOO, name + ".py"), json_path=str(tmp_path / "r.json"), goal=goal)
    assert code == 0
    report = trainmedic.Report.read_json(tmp_path / "r.json")
    _check(name, report)
    err = capsys.readouterr().err
    for f in report.findings:      # each finding printed once, as it appeared
        assert err.count(f"trainmedic {f.severity.value.upper()} {f.id} ") == 1
