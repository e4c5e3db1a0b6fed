"""Plain-text rendering of findings: short enough to read mid-training, with the numbers and
the first things to try. No control sequences, so it is safe in CI logs."""

from __future__ import annotations

import textwrap

from trainmedic.findings import Finding, Report, ordered

_MARK = {"error": "ERROR", "warning": "WARNING", "info": "INFO"}


def format_finding(f: Finding, fixes: int = 2, width: int = 100) -> str:
    where = f" [{f.where}]" if f.where else ""
    step = f" at step {f.step}" if f.step is not None else ""
    head = f"trainmedic {_MARK[f.severity.value]} {f.id}{step}{where}: {f.title}"
    body = textwrap.fill(f.message + " " + _why(f.id), width=width, initial_indent="  ",
                         subsequent_indent="  ")
    tries = [textwrap.fill(fix, width=width, initial_indent="  try: ", subsequent_indent="       ")
             for fix in f.fixes[:fixes]]
    return "\n".join([head, body, *tries])


def _why(finding_id: str) -> str:
    from trainmedic.catalog import CATALOG
    kind = CATALOG.get(finding_id)
    return kind.why if kind is not None else ""


def format_report(report: Report, width: int = 100) -> str:
    run = report.run
    lines = [f"trainmedic summary: {run.get('name', 'run')} — {run.get('steps', 0)} steps, "
             f"{len(report.findings)} finding(s), status {run.get('status', '?')}"]
    if not report.findings:
        lines.append("  no problems found")
    ranked = ordered(report.findings)
    active = [f for f in ranked if f.active]
    roots = [f for f in active if f.caused_by is None and f.severity.value != "info"]
    if roots:
        lines.append(f"  root cause: {roots[0].id}"
                     + (f" (also independent: {', '.join(f.id for f in roots[1:])})" if roots[1:] else "")
                     + (f"; consequences: {', '.join(f.id for f in active if f.caused_by)}"
                        if any(f.caused_by for f in active) else ""))
    for f in active:
        step = f"step {f.step}" if f.step is not None else ""
        cause = f"  <- {f.caused_by}" if f.caused_by else ""
        lines.append(f"  {_MARK[f.severity.value]:<7} {f.id:<26} {step:<10} {f.title}{cause}")
    resolved = [f for f in ranked if not f.active]
    if resolved:
        lines.append("  resolved during the run:")
        for f in resolved:
            lines.append(f"  {_MARK[f.severity.value]:<7} {f.id:<26} step {f.step} -> {f.resolved_step}  {f.title}")
    if run.get("repairs"):
        lines.append("  repairs (rolled back and verified in place):")
        for r in run["repairs"]:
            back = (f"step {r['step']} -> back to {r['rolled_back_to_step']}"
                    if r.get("rolled_back_to_step") is not None else f"step {r['step']}")
            lines.append(f"  {r['outcome']:<10} {r['remedy']:<24} for {r['finding']:<24} {back}"
                         + (f"  ({r['reason']})" if r.get("reason") else ""))
            gain = validation_gain(r)
            if gain:
                lines.append(f"             {gain}")
    for g in run.get("repairs_given_up") or []:
        lines.append(f"  not repaired: {g['finding']} ({g['reason']}); the run went on without a remedy for it")
    if run.get("applied_from_start"):
        lines.append("  applied from the first step: " + ", ".join(a["remedy"] for a in run["applied_from_start"]))
    if run.get("disabled"):
        lines.append("  trainmedic disabled after internal errors: " + ", ".join(run["disabled"]))
    return "\n".join(lines)


def format_checks(report: Report) -> str:
    """The checkup as a table: check, status, time, findings or the reason it was skipped."""
    rows = report.run.get("checks", [])
    lines = [f"{'check':<28} {'status':<8} {'time':>7}  result", "-" * 78]
    for c in rows:
        result = ", ".join(c["findings"]) or c["reason"]
        lines.append(f"{c['name']:<28} {c['status']:<8} {c['seconds']:>6.2f}s  {result}")
    counts = {s: sum(c["status"] == s for c in rows) for s in ("passed", "failed", "skipped", "error")}
    lines.append("-" * 78)
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) +
                 f" in {report.run.get('duration_s', 0):.1f}s")
    return "\n".join(lines)


def validation_gain(record: dict) -> str | None:
    """What an overfitting remedy did to validation, against the unrepaired run over the same
    epochs after the snapshot: e.g. "validation loss 0.237 unrepaired -> 0.2 repaired, accuracy
    0.935 -> 0.951 (mean of epochs 6-10 after the snapshot)"; None for other remedies."""
    if record.get("val_mean") is None or record.get("val_mean_unrepaired") is None:
        return None
    first, last = record.get("val_epochs") or (1, None)
    text = f"validation loss {record['val_mean_unrepaired']:.4g} unrepaired -> {record['val_mean']:.4g} repaired"
    if record.get("val_acc_mean") is not None:
        text += f", accuracy {record['val_acc_mean_unrepaired']:.4g} -> {record['val_acc_mean']:.4g}"
    span = f"epochs {first}-{last}" if last else "the epochs"
    return text + f" (mean of {span} after the snapshot)"
