"""The self-contained HTML report: findings first, then the curves. One file, no external
URLs (plots are inline PNG data), every user-controlled string escaped by jinja2."""

from __future__ import annotations

import json
import os
from typing import Any

from trainmedic.catalog import CATALOG
from trainmedic.findings import Report, _jsonable, write_atomic
from trainmedic.report import plots
from trainmedic.report.terminal import validation_gain


def render_html(report: Report, ticks: list[dict[str, Any]]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("trainmedic", "report/templates"),
                             autoescape=True, undefined=jinja2.ChainableUndefined)
    data = report.to_dict()
    run = data["run"]
    epochs = run.get("epochs") or []
    lr_details = next((c.get("details") for c in run.get("checks", []) if c["name"] == "learning_rate"), None)
    metrics = run.get("metrics") or {}
    worst = (run.get("worst_mistakes") or {}).get("lowest_true_class_probability")
    augmentation = run.get("augmentation") or {}
    sections = [(t, u) for t, u in [
        ("Loss (dashed: a rollback and the remedy tried there)" if run.get("repairs") else "Loss",
         plots.loss_curve(ticks, epochs, run.get("repairs") or [])),
        ("Accuracy per epoch", plots.metric_curve(epochs)),
        ("Learning rate", plots.lr_curve(ticks)),
        ("Gradient norm per layer", plots.grad_heatmap(ticks)),
        ("Update / weight ratio per layer (dashed: 1e-3)", plots.update_ratios(ticks)),
        ("Dead and saturated activation fractions", plots.activation_fractions(ticks)),
    ] if u]
    late = [(t, u) for t, u in [
        ("LR range test", plots.lr_range(lr_details)),
        ("Confusion matrix (validation)", plots.confusion(metrics.get("confusion_matrix"))),
        ("Precision-recall curve", plots.pr_curve(metrics.get("pr_curve"))),
        ("Worst mistakes (target→predicted, probability of the true class)", plots.thumbnails(worst)),
        (f"Augmentation: {augmentation.get('function')} (originals above what the model is fed)",
         augmentation.get("preview")),
        ("Learning curve", plots.learning_curve(run.get("learning_curve"))),
    ] if u]
    findings = [dict(f, evidence_json=json.dumps(_jsonable(f["evidence"]), indent=1)[:4000],
                     why=CATALOG[f["id"]].why if f["id"] in CATALOG else "")
                for f in data["findings"]]
    for r in run.get("repairs") or []:
        r["validation_gain"] = validation_gain(r)
    checks = run.get("checks") or run.get("first_batch_checks") or []
    return env.get_template("report.html.j2").render(
        run=run, findings=findings, sections=sections, late_sections=late, checks=checks,
        histograms=plots.activation_histograms(ticks), metrics=metrics, version=data["trainmedic_version"])


def write_html(report: Report, ticks: list[dict[str, Any]], path: "str | os.PathLike[str]") -> str:
    return write_atomic(path, render_html(report, ticks))
