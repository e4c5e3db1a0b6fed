"""The fault zoo: every planted bug fires its finding; clean programs report no warning or
error. Each program runs through watch() and through the zero-code runner."""

import contextlib
import glob
import importlib
import io
import os

import pytest

import trainmedic
from trainmedic.runner import run_script

from conftest import ZOO

PROGRAMS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ZOO, "*.py"))
                  if not os.path.basename(p).startswith("_"))
BUGS = [p for p in PROGRAMS if p.startswith("bug_")]
CLEAN = [p for p in PROGRAMS if p.startswith("clean_")]


def _check(name, report):
    expect = importlib.import_module(name).EXPECT
    serious = [f"{f.id} ({f.severity.value}): {f.message}" for f in report.at_least("warning")]
    if expect is None:
        assert serious == [], f"clean program {name} raised findings"
    else:
        assert expect in report.ids(), f"{name}: expected {expect}, got {report.ids()}"


def test_zoo_covers_every_detector_and_enough_clean_programs():
    from trainmedic.detectors import default_detectors
    planted = {importlib.import_module(b).EXPECT for b in BUGS}
    assert {d.id for d in default_detectors()} <= planted
    assert len(CLEAN) >= 8


@pytest.mark.parametrize("name", PROGRAMS)
def test_watch(name, tmp_path):
    mod = importlib.import_module(name)
    goal = getattr(mod, "GOAL", None)
    with contextlib.redirect_stdout(io.StringIO()):
        monitor = mod.main(watch=lambda m, o: trainmedic.watch(m, o, run_dir=tmp_path, goal=goal,
                                                               on_finding=lambda f: None))
        report = monitor.report()
    _check(name, report)


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
