"""Planted-bug programs of benchmarks/repair_programs repaired in place by `run --repair`: the
expected remedy is kept and the final metric is within 10% of the clean twin's (the benchmark
runs all pairs; these cover one remedy family each that the demo tests do not)."""

import json
import os
import re
import runpy
import sys

import pytest
import torch

from trainmedic.runner import run_script

PROGRAMS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "repair_programs")
FINAL = re.compile(r"FINAL \S+=(\S+)")


def _final(text: str) -> float:
    return float(FINAL.findall(text)[-1])


def _clean_and_repaired(pair, tmp_path, capsys, monkeypatch):
    """The clean twin's FINAL metric (plain), the bug program's under `run --repair`, and the
    repaired run's ``run`` section of report.json."""
    monkeypatch.syspath_prepend(PROGRAMS)
    monkeypatch.setattr(sys, "argv", ["clean"])
    runpy.run_path(os.path.join(PROGRAMS, f"clean_{pair}.py"), run_name="__main__")
    clean = _final(capsys.readouterr().out)
    out = tmp_path / "report.json"
    assert run_script(os.path.join(PROGRAMS, f"bug_{pair}.py"), json_path=str(out),
                      run_dir=str(tmp_path / "run"), live=False, repair=True) == 0
    repaired = _final(capsys.readouterr().out)
    return clean, repaired, json.loads(out.read_text())["run"]


@pytest.mark.parametrize("pair, remedy", [
    ("eval_no_eval", "eval_mode_for_evaluation"),
    ("imbalance", "class_weights"),
    ("unnormalized", "normalize_inputs"),
    ("dead_relu", "leaky_relu"),
    ("mse_broadcast", "loss_gets_logits"),
    ("overfitting", ("weight_decay_up", "dropout_up", "early_stopping")),
    ("no_warmup", "warmup"),
])
def test_program_is_repaired_to_within_10_percent_of_its_clean_twin(tmp_path, capsys, monkeypatch, pair, remedy):
    clean, repaired, run = _clean_and_repaired(pair, tmp_path, capsys, monkeypatch)
    repairs = run["repairs"]
    kept = [r["remedy"] for r in repairs if r["outcome"] in ("kept", "unverified")]
    assert kept and set(kept) <= set([remedy] if isinstance(remedy, str) else remedy), repairs
    assert repaired >= clean - 0.1 * abs(clean), (repaired, clean)
    assert torch._C._len_torch_function_stack() == 0           # no remedy's mode left behind


def test_a_kept_weight_decay_is_not_turned_back(tmp_path, capsys, monkeypatch):
    """Raised against overfitting, the weight decay then makes the penalty look dominant: the
    remedy that would lower it again is skipped, with no rollback, and the run keeps the raise."""
    clean, repaired, run = _clean_and_repaired("weak_weight_decay", tmp_path, capsys, monkeypatch)
    assert repaired >= clean - 0.1 * abs(clean), (repaired, clean)
    outcomes = [(r["remedy"], r["outcome"]) for r in run["repairs"]]
    assert ("weight_decay_up", "kept") in outcomes, outcomes
    skipped = [r for r in run["repairs"] if r["outcome"] == "skipped"]
    assert skipped and all(r["remedy"] == "weight_decay_0.1" and r["rolled_back_to_step"] is None
                           and "weight_decay_up" in r["reason"] for r in skipped)
    assert all("would undo" in g["reason"] for g in run.get("repairs_given_up", []))


def test_an_overfitting_cnn_is_repaired_by_augmentation_with_the_validation_gain_reported(tmp_path, capsys,
                                                                                           monkeypatch):
    """bug_overfitting_cnn: 200 digit images, no augmentation. Shifting the training images by
    a pixel (augment_inputs, tried first for images) is kept: over the second half of the
    window (the model adapts to shifted images first) the validation loss is below the
    unrepaired run's, and the report says by how much."""
    from trainmedic.report.html import render_html
    from trainmedic.rundir import read_run
    clean, repaired, run = _clean_and_repaired("overfitting_cnn", tmp_path, capsys, monkeypatch)
    assert repaired >= clean - 0.1 * abs(clean), (repaired, clean)
    kept = next(r for r in run["repairs"] if r["outcome"] == "kept")
    assert kept["remedy"] == "augment_inputs" and kept["val_mean"] < kept["val_mean_unrepaired"], kept
    first, last = kept["val_epochs"]
    assert first == last // 2 + 1, kept
    report, ticks = read_run(str(tmp_path / "run"))
    html = render_html(report, ticks)
    assert (f"validation loss {kept['val_mean_unrepaired']:.4g} unrepaired -&gt; {kept['val_mean']:.4g} "
            f"repaired") in html


def test_a_regulariser_that_leaves_the_gap_open_is_not_kept(tmp_path, capsys, monkeypatch):
    """bug_weak_dropout: weight decay 5e-4 under Adam barely regularises, so the train/validation
    gap stays as wide as the unrepaired run's and weight_decay_up fails; dropout 0.5 closes it,
    and the run ends within 10% of its clean twin."""
    clean, repaired, run = _clean_and_repaired("weak_dropout", tmp_path, capsys, monkeypatch)
    assert repaired >= clean - 0.1 * abs(clean), (repaired, clean)
    repairs = {r["remedy"]: r for r in run["repairs"]}
    weak, dropout = repairs["weight_decay_up"], repairs["dropout_up"]
    assert weak["outcome"] == "failed" and weak["val_gap"] > 2 / 3 * weak["val_gap_unrepaired"], weak
    assert dropout["outcome"] == "kept" and dropout["val_gap"] <= 2 / 3 * dropout["val_gap_unrepaired"], dropout
    augment = repairs["augment_inputs"]                # regression inputs: known before any rollback
    assert augment["outcome"] == "not applicable" and augment["rolled_back_to_step"] is None, augment
