"""``trainmedic fix``: find the remedy that repairs a training script and prove it.

1. The script runs once, watched (the baseline): its findings and its final validation metric.
2. The first repairable finding (``order.PRIORITY``) gives the candidates (``order.ORDER``).
   Each candidate re-runs the script from the start with the remedy in place from step 0: as a
   patched copy of the script when the setting is a literal there (``patches.patch_for``), else
   with the remedy applied at the first optimizer step (``trainmedic run --apply``). A candidate
   is stopped as soon as the finding it answers comes back (``--stop-on``), so a failing
   candidate costs a fraction of a run.
3. A candidate is verified when it ran to the end, the finding stayed away and the final metric
   beats the baseline's. The first verified candidate wins (``all_candidates`` tries them all);
   the user's files are never edited: the winner's change is shown as a unified diff.

Every run is a ``trainmedic run`` child process in its own run directory under ``out_dir``. With
``fork`` (the ``trainmedic fix`` command, on Linux) it is forked from this process after the
script's library imports (torch, the packages its top-level ``import`` lines name), so each
candidate does not pay for them again. Forking is only safe in a process that has run no torch
operation (a started OpenMP pool does not survive a fork): from Python, leave it off.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from trainmedic import run_metric
from trainmedic.repair import order as _order
from trainmedic.repair.remedies import ScaleLearningRate

CATASTROPHES = ("nonfinite_loss", "loss_diverging")
# class weights trade accuracy for the minority classes' recall: judged on balanced accuracy
TARGET_METRICS = {"class_imbalance": "recall_macro"}
# findings a candidate is not stopped on and judged by its metric alone: data findings are about
# the inputs, which a remedy does not change; more regularisation narrows the gap, it may not close it
METRIC_ONLY = {"overfitting"}


@dataclass
class Candidate:
    remedy: str
    finding: str
    route: str                              # "patch" (a patched copy) | "runtime" (--apply)
    summary: str = ""
    status: str = "not run"     # verified | worse | came back | stopped | crashed | not applicable
    metric: float | None = None
    seconds: float = 0.0
    steps: int = 0
    stopped_by: str | None = None
    run_dir: str = ""
    diff: str | None = None


@dataclass
class FixResult:
    script: str
    metric_name: str | None
    maximize: bool
    baseline: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)
    winner: Candidate | None = None
    out_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["winner"] = self.winner.remedy if self.winner else None
        return out


def run_fix(script: str, args: list[str] | tuple[str, ...] = (), *, metric: str | None = None,
            out_dir: str | None = None, all_candidates: bool = False, max_candidates: int = 6,
            every: int = 25, timeout: float | None = None, fork: bool = False,
            echo: Callable[[str], None] = print) -> FixResult:
    """Diagnose ``script``, try the remedies of its first repairable finding from step 0 and
    return what was found (see the module docstring)."""
    if not os.path.isfile(script):
        raise FileNotFoundError(f"script={script!r} does not exist or is not a file")
    if not isinstance(max_candidates, int) or max_candidates < 1:
        raise ValueError(f"max_candidates={max_candidates!r}: expected an int >= 1")
    name = os.path.splitext(os.path.basename(script))[0]
    out_dir = out_dir or os.path.join("trainmedic-runs", time.strftime("%Y%m%d-%H%M%S") + f"-fix-{name}")
    os.makedirs(out_dir, exist_ok=True)
    with open(script, encoding="utf-8") as fh:
        source = fh.read()

    fork = fork and hasattr(os, "fork") and sys.platform.startswith("linux")
    if fork:
        _preimport(source, script)
    echo(f"trainmedic fix: running {script} as it is (the baseline)")
    base = _child(script, args, os.path.join(out_dir, "baseline"), [], every, timeout, fork)
    report = base["report"]
    if report is None:
        raise RuntimeError(f"the baseline run wrote no report; see {base['run_dir']}/output.txt")
    found = {f["id"]: f for f in report["findings"]}
    targets = sorted((f for f in found if f in _order.ORDER),
                     key=lambda f: _order.PRIORITY.index(f) if f in _order.PRIORITY else 99)
    metric_name, maximize = _choose_metric(report, metric, targets[0] if targets else None)
    base_metric = run_metric.value(report, metric_name)
    result = FixResult(script=script, metric_name=metric_name, maximize=maximize, out_dir=out_dir,
                       baseline={"metric": base_metric, "seconds": base["seconds"],
                                 "status": report["run"]["status"], "steps": report["run"].get("steps"),
                                 "findings": sorted(found)})
    echo(f"  baseline: {_fmt(base_metric)} {metric_name or ''}, findings: {', '.join(sorted(found)) or 'none'}"
         f" ({base['seconds']:.1f} s)")
    if not targets:
        echo("  no repairable finding: nothing to fix")
        _save(result)
        return result

    from trainmedic.repair.patches import patch_for
    info = {"optimizer_class": (report["run"].get("optimizers") or [None])[0],
            "missing": found.get("params_not_in_optimizer", {}).get("evidence", {}).get("parameters")}
    for target in targets:
        for remedy in _candidates(target, found[target]):
            if len(result.candidates) >= max_candidates:
                break
            patch = patch_for(remedy, source, info)
            cand = Candidate(remedy=remedy, finding=target, route="patch" if patch else "runtime",
                             summary=patch.summary if patch else _order.make(remedy).description)
            result.candidates.append(cand)
            cand.run_dir = os.path.join(out_dir, f"{len(result.candidates):02d}-{remedy}")
            stops = ([] if _metric_only(target) else [target]) + [c for c in CATASTROPHES if c != target]
            extra = [x for c in stops for x in ("--stop-on", c)]
            if patch is not None:
                os.makedirs(cand.run_dir, exist_ok=True)
                patched = os.path.join(cand.run_dir, os.path.basename(script))
                with open(patched, "w", encoding="utf-8") as fh:
                    fh.write(patch.source)
                extra += ["--source", patched]
                cand.diff = patch.diff(source, script)
            else:
                extra += ["--apply", remedy]
            echo(f"  trying {remedy} for {target} ({cand.summary})")
            run = _child(script, args, cand.run_dir, extra, every, timeout, fork)
            _judge(cand, run, target, metric_name, maximize, base_metric)
            echo(f"    {cand.status}: {_fmt(cand.metric)} {metric_name or ''} ({cand.seconds:.1f} s)")
            if cand.status == "verified":
                result.winner = result.winner or cand
                if not all_candidates:
                    break
        if result.winner is not None and not all_candidates:
            break
    _save(result)
    return result


def _metric_only(target: str) -> bool:
    from trainmedic.catalog import CATALOG
    return target in METRIC_ONLY or CATALOG[target].category == "data"


def _candidates(target: str, finding: dict[str, Any]) -> list[str]:
    out = []
    for remedy in _order.ORDER[target]:
        if not _order.make(remedy).from_start:
            continue
        if remedy == "lr_to_healthy_updates":        # a concrete factor, so the patch can say it
            peak = finding.get("evidence", {}).get("update_ratio_peak")
            if not peak:
                continue
            remedy = f"lr_scale_{ScaleLearningRate.healthy_factor(peak):g}"
        out.append(remedy)
    return out


def _preimport(source: str, script: str) -> None:
    """Import the installed packages the script's top-level ``import`` lines name (not the
    script's own modules), so forked children find them loaded. Failures are ignored: the
    child imports as the script would."""
    here = os.path.dirname(os.path.abspath(script))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    names = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module and not n.level]
    for name in names:
        top = name.split(".")[0]
        if os.path.exists(os.path.join(here, top + ".py")) or os.path.isdir(os.path.join(here, top)):
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the child will raise it the way the script would
            pass


def _child(script: str, args: Any, run_dir: str, extra: list[str], every: int,
           timeout: float | None, fork: bool) -> dict[str, Any]:
    """One ``trainmedic run`` child process; its report (or None), wall time and exit code."""
    os.makedirs(run_dir, exist_ok=True)
    argv = ["run", "--no-live", "--every", str(every), "--run-dir", run_dir, *extra, script, *args]
    started = time.perf_counter()
    with open(os.path.join(run_dir, "output.txt"), "w", encoding="utf-8") as log:
        if fork:
            code = _forked(argv, log, timeout)
        else:
            try:
                code = subprocess.run([sys.executable, "-m", "trainmedic.cli", *argv], stdout=log,
                                      stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = None
    seconds = time.perf_counter() - started
    path = os.path.join(run_dir, "report.json")
    report = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    return {"report": report, "seconds": seconds, "code": code, "run_dir": run_dir}


def _forked(argv: list[str], log: Any, timeout: float | None) -> int | None:
    """``trainmedic <argv>`` in a forked child writing to ``log``; its exit code (None: timed
    out and killed). The parent has run no torch operation, so the child starts clean."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                        # the child: never returns
        code = 1
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            from trainmedic.cli import main
            main(argv, prog_name="trainmedic", standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001
            import traceback
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(code)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.05)


def _judge(cand: Candidate, run: dict[str, Any], target: str, metric_name: str | None,
           maximize: bool, base_metric: float | None) -> None:
    cand.seconds = run["seconds"]
    report = run["report"]
    if report is None or run["code"] not in (0,):
        cand.status = "crashed" if run["code"] is not None else "timed out"
        if report is not None:
            cand.steps = report["run"].get("steps") or 0
        return
    rinfo = report["run"]
    cand.steps = rinfo.get("steps") or 0
    if rinfo.get("status") == "stopped":
        cand.status, cand.stopped_by = "stopped", rinfo.get("stopped_by")
        return
    if rinfo.get("not_applicable"):
        cand.status = "not applicable"
        return
    if rinfo.get("repair_disabled"):
        cand.status = "crashed"
        return
    cand.metric = run_metric.value(report, metric_name)
    active = {f["id"] for f in report["findings"] if f.get("status", "active") == "active"}
    if target in active and not _metric_only(target):
        cand.status = "came back"
    elif base_metric is not None and (cand.metric is None or not run_metric.better(cand.metric, base_metric, maximize)):
        cand.status = "worse"
    else:
        cand.status = "verified"


def _choose_metric(report: dict[str, Any], name: str | None,
                   target: str | None = None) -> tuple[str | None, bool]:
    """The metric to compare: ``name``; else the one that judges ``target``'s fix
    (``TARGET_METRICS``); else ``run_metric.default``. Returns (key, maximize)."""
    key = run_metric.resolve(report, name) if name is not None else \
        run_metric.default(report, TARGET_METRICS.get(target))
    return key, key is None or run_metric.maximized(key)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _save(result: FixResult) -> None:
    with open(os.path.join(result.out_dir, "fix.json"), "w", encoding="utf-8") as fh:
        json.dump(result.to_dict(), fh, indent=1, default=str)


def format_table(result: FixResult) -> str:
    """The candidates as a text table, then the verdict."""
    base = result.baseline
    name = result.metric_name or "metric"
    rows = [("remedy", "for", "route", "status", name, "cost")]
    rows.append(("(none: baseline)", "", "", base["status"], _fmt(base["metric"]), "1.00x"))
    for c in result.candidates:
        status = c.status + (f" at step {c.steps} ({c.stopped_by})" if c.status == "stopped" else "")
        rows.append((c.remedy, c.finding, c.route, status, _fmt(c.metric),
                     f"{c.seconds / max(base['seconds'], 1e-9):.2f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    w = result.winner
    if w is not None:
        lines.append(f"\nverified fix: {w.remedy} ({w.summary}) for {w.finding}: {name} "
                     f"{_fmt(base['metric'])} -> {_fmt(w.metric)}")
        if w.diff is None:
            lines.append("no patch: the setting is not a literal in the script; apply the change "
                         f"in your code, or run with `trainmedic run --apply {w.remedy}`")
    elif result.candidates:
        lines.append("\nno candidate was verified; the findings and their fixes are in the baseline "
                     "report")
    return "\n".join(lines)
