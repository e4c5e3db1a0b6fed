"""What a study found, for people: the best trials, what pruning stopped and saved, parameter
importances, the learning rate the checkup suggests; as a dict (``summarize``), a terminal
table (``format_summary``) and a self-contained HTML page with Optuna's plots
(``render_html``, ``write_reports``)."""

from __future__ import annotations

import json
import os
import statistics
import warnings
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainmedic.search.lr_check import advice
from trainmedic.search.trial import PRUNER


def summarize(study: optuna.Study, top: int = 5) -> dict[str, Any]:
    """Counts by state, the ``top`` best complete trials, why trials were pruned (a finding id,
    or Optuna's pruner), trial-steps run and saved by pruning, parameter importances, and the
    checkup's LR suggestion (``lr_check``, with ``advice``: it beside the best trial's lr)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    ranked = sorted(complete, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")
    steps = [int(t.user_attrs.get("steps") or 0) for t in trials if t.state.is_finished()]
    best = [_trial(t) for t in ranked[:top]]
    check = study.user_attrs.get("lr_check")
    return {
        "study": study.study_name, "direction": study.direction.name.lower(),
        "settings": study.user_attrs.get("settings", {}),
        "states": dict(Counter(t.state.name.lower() for t in trials)),
        "best": best,
        "pruned_by": dict(Counter(_reason(t) for t in pruned)),
        "trial_steps": sum(steps), "steps_saved": _saved(complete, pruned),
        "importances": _importances(study, complete),
        "lr_check": check and {**check, "advice": advice(check, best[0] if best else None)},
    }


def _trial(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "value": t.value, "params": t.params,
            "routes": t.user_attrs.get("routes", {}), "steps": t.user_attrs.get("steps"),
            "findings": t.user_attrs.get("findings", []), "run_dir": t.user_attrs.get("run_dir")}


def _reason(t: FrozenTrial) -> str:
    """Why a trial was pruned: the finding id that stopped it, PRUNER or NONFINITE."""
    return str(t.user_attrs.get("pruned_by", PRUNER))


def _saved(complete: list[FrozenTrial], pruned: list[FrozenTrial]) -> int:
    """Trial-steps pruning saved: for each pruned trial, the steps of a complete trial with the
    same batch size (its median; all complete trials' median when none has it) less the steps
    it ran."""
    if not complete:
        return 0

    def full(t: FrozenTrial) -> float:
        same = [c for c in complete if c.params.get("batch_size") == t.params.get("batch_size")]
        return statistics.median(int(c.user_attrs.get("steps") or 0) for c in (same or complete))
    return int(sum(max(0.0, full(t) - int(t.user_attrs.get("steps") or 0)) for t in pruned))


def _importances(study: optuna.Study, complete: list[FrozenTrial]) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA); empty with fewer than 3 complete trials."""
    if len(complete) < 3 or not complete[0].params:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):     # e.g. every trial had the same values
        return {}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as text: a table of the best trials, then pruning and importances."""
    s = summary
    states = ", ".join(f"{n} {k}" for k, n in sorted(s["states"].items()))
    lines = [f"study {s['study']!r} ({s['direction']} {s['settings'].get('metric', 'the metric')}): {states}"]
    if s["best"]:
        names = list(s["best"][0]["params"])
        rows = [("trial", "value", *names, "steps", "findings")]
        for t in s["best"]:
            rows.append((str(t["number"]), fmt(t["value"]), *(fmt(t["params"].get(n)) for n in names),
                         str(t["steps"]), ", ".join(t["findings"]) or "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        table = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        table.insert(1, "  ".join("-" * w for w in widths))
        lines += ["", *table]
        routes = s["best"][0]["routes"]
        if routes:
            lines.append("routes: " + ", ".join(f"{k} -> {v}" for k, v in routes.items()))
    else:
        lines.append("no trial completed")
    if s["pruned_by"]:
        why = ", ".join(f"{n} by {k}" for k, n in sorted(s["pruned_by"].items(), key=lambda kv: -kv[1]))
        lines.append(f"pruned: {why}; pruning saved about {s['steps_saved']} of "
                     f"{s['trial_steps'] + s['steps_saved']} trial-steps")
    if s["importances"]:
        lines.append("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()))
    if s.get("lr_check"):
        lines.append(s["lr_check"]["advice"])
    return "\n".join(lines)


def fmt(v: Any) -> str:
    """A value as the tables show it (floats to 4 significant digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_reports(result: Any, summary: dict[str, Any], html_path: str | None = None) -> list[str]:
    """``tune.json`` and ``tune.html`` in the result's folder (and the HTML at ``html_path``
    too); the paths written."""
    from trainmedic.findings import _jsonable, write_atomic
    paths = [write_atomic(os.path.join(result.out_dir, "tune.json"), json.dumps(_jsonable(summary), indent=1))]
    page = render_html(result.study, summary)
    for path in [os.path.join(result.out_dir, "tune.html")] + ([html_path] if html_path else []):
        paths.append(write_atomic(path, page))
    return paths


def render_html(study: optuna.Study, summary: dict[str, Any]) -> str:
    """A self-contained HTML page: the summary, the best trial's findings, and Optuna's
    optimisation history, parallel coordinates and importance plots (inline PNG)."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.PackageLoader("trainmedic", "report/templates"),
                             autoescape=True)
    best = summary["best"][0] if summary["best"] else None
    return env.get_template("tune.html.j2").render(s=summary, plots=_plots(study),
                                                   findings=_best_findings(best), best=best)


def _best_findings(best: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The best trial's findings from its run's report; None when that report is not on this
    machine (a trial another machine ran)."""
    if best is None:
        return []
    path = os.path.join(best.get("run_dir") or "", "report.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["findings"]


def _plots(study: optuna.Study) -> list[tuple[str, str]]:
    """(title, PNG data URI) of Optuna's matplotlib plots that apply to this study."""
    from optuna.visualization import matplotlib as ovm
    from trainmedic.report.plots import _pyplot, _uri
    plt = _pyplot()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    wanted = [("Optimisation history", ovm.plot_optimization_history, 1),
              ("Parallel coordinates", ovm.plot_parallel_coordinate, 2),
              ("Parameter importances", ovm.plot_param_importances, 3)]
    out = []
    for title, plot, needs in wanted:
        if len(complete) < needs:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
        except (RuntimeError, ValueError):
            plt.close("all")                # a figure it opened before it gave up
            continue
        fig = (ax if not hasattr(ax, "__len__") else ax.flat[0]).figure
        fig.set_size_inches(8, 3.6)
        out.append((title, _uri(plt, fig)))
    return out
