"""Detection benchmark: every fault-zoo program through the zero-code runner.

    python benchmarks/detection.py                       # all of tests/zoo, 2 at a time
    python benchmarks/detection.py --jobs 4 --only 'bug_label_noise*' --json detection.json

Each program `tests/zoo/<name>.py` runs in its own subprocess, in a fresh temporary folder:

    <python> -m trainmedic.cli run --no-live --json <tmp>/<name>.json <program>

and its JSON report (docs/report-format.md) is compared with the program's `EXPECT` (the root
cause a bug program plants; None for a clean program). Printed as Markdown, ready to paste into
benchmarks/RESULTS.md: a header (command, date, machine), one row per program and the rates

- detection rate: bug programs whose EXPECT id (and every id in ALSO) is among the findings;
- root-cause rate: bug programs whose first finding (the report lists root causes first) is EXPECT;
- false-alarm rate: clean programs with at least one error finding;
- warnings per clean run: mean number of warning findings over the clean programs;
- unrelated errors in bug programs: error findings that are neither EXPECT (or in ALSO) nor
  follow from it through their chain of `caused_by`.

A program's GOAL (e.g. "val_acc>=0.95") is passed as `--goal`.

Each program runs with OMP_NUM_THREADS=MKL_NUM_THREADS=--threads (default 1): parallel jobs with
several intra-op threads each oversubscribe a small machine and make small models many times
slower. `--threads 0` leaves the environment as it is.

Findings' `caused_by` and `status` are read with .get, so older reports without them work too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import fnmatch
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from _programs import ROOT, constant, git_head, machine  # beside this script
ZOO = os.path.join(ROOT, "tests", "zoo")


def expected(path: str):
    """The program's EXPECT constant (the planted root cause, None when clean)."""
    return constant(path, "EXPECT")


def programs(only: list[str] | None) -> list[str]:
    paths = sorted(p for p in glob.glob(os.path.join(ZOO, "*.py"))
                   if os.path.basename(p).startswith(("bug_", "clean_")))
    if only:
        paths = [p for p in paths
                 if any(fnmatch.fnmatch(os.path.basename(p)[:-3], pat.removesuffix(".py"))
                        for pat in only)]
    return paths


def run_one(path: str, python: str, timeout: float, threads: int) -> dict:
    name = os.path.basename(path)[:-3]
    row = {"program": name, "expect": expected(path), "also": list(constant(path, "ALSO", ())),
           "exit_code": None, "seconds": None,
           "status": None, "findings": [], "error": None}
    with tempfile.TemporaryDirectory(prefix=f"tm-detect-{name}-") as tmp:
        report_path = os.path.join(tmp, name + ".json")
        goal = constant(path, "GOAL", None)
        cmd = [python, "-m", "trainmedic.cli", "run", "--no-live", "--json", report_path,
               *(["--goal", goal] if goal else []), path]
        t0 = time.perf_counter()
        try:
            env = dict(os.environ)
            if threads > 0:
                env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            row["exit_code"] = proc.returncode
        except subprocess.TimeoutExpired:
            row["error"] = f"timed out after {timeout:.0f} s"
            proc = None
        row["seconds"] = round(time.perf_counter() - t0, 1)
        try:
            with open(report_path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            tail = (proc.stderr.strip().splitlines()[-1:] if proc is not None and proc.stderr else [])
            row["error"] = row["error"] or f"no report ({type(e).__name__}){': ' + tail[0] if tail else ''}"
            return row
    row["status"] = report.get("run", {}).get("status")
    row["findings"] = [{"id": f.get("id"), "severity": f.get("severity"),
                        "caused_by": f.get("caused_by"), "status": f.get("status"),
                        "step": f.get("step")} for f in report.get("findings", [])]
    return row


def judge(row: dict) -> dict:
    expect, findings = row["expect"], row["findings"]
    ids = [f["id"] for f in findings]
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    row["first"] = ids[0] if ids else None
    row["errors"] = len(errors)
    row["active_errors"] = sum(1 for f in errors if f.get("status") != "resolved")
    row["warnings"] = len(warnings)
    if expect is None:
        row["kind"] = "clean"
        row["unrelated_errors"] = len(errors)
        if row["error"]:
            row["verdict"] = "no report"
        elif errors:
            row["verdict"] = "FALSE ALARM"
        elif warnings:
            row["verdict"] = f"ok ({len(warnings)} warning{'s' if len(warnings) > 1 else ''})"
        else:
            row["verdict"] = "ok"
    else:
        row["kind"] = "bug"
        row["detected"] = expect in ids and all(a in ids for a in row.get("also", ()))
        row["root_cause"] = row["first"] == expect
        by_id = {f["id"]: f for f in findings}

        def follows(f):            # f is expect, or its chain of causes reaches expect
            seen = set()
            while f is not None and f["id"] not in seen:
                if f["id"] == expect:
                    return True
                seen.add(f["id"])
                f = by_id.get(f.get("caused_by"))
            return False
        row["unrelated_errors"] = sum(1 for f in errors
                                      if f["id"] not in row.get("also", ()) and not follows(f))
        if row["error"] and not findings:
            row["verdict"] = "no report"
        elif row["root_cause"]:
            row["verdict"] = "root cause"
        elif row["detected"]:
            row["verdict"] = "detected, not first"
        else:
            row["verdict"] = "MISSED"
    return row


def rates(rows: list[dict]) -> dict:
    bugs = [r for r in rows if r["kind"] == "bug"]
    clean = [r for r in rows if r["kind"] == "clean"]

    def share(part, whole):
        return round(part / whole, 3) if whole else None
    return {
        "bug_programs": len(bugs),
        "clean_programs": len(clean),
        "detected": sum(r["detected"] for r in bugs),
        "detection_rate": share(sum(r["detected"] for r in bugs), len(bugs)),
        "root_cause": sum(r["root_cause"] for r in bugs),
        "root_cause_rate": share(sum(r["root_cause"] for r in bugs), len(bugs)),
        "false_alarms": sum(r["errors"] > 0 for r in clean),
        "false_alarm_rate": share(sum(r["errors"] > 0 for r in clean), len(clean)),
        "false_alarms_resolved_only": sum(r["errors"] > 0 and r["active_errors"] == 0 for r in clean),
        "warnings_per_clean_run": (round(sum(r["warnings"] for r in clean) / len(clean), 2)
                                   if clean else None),
        "unrelated_errors_in_bug_programs": sum(r["unrelated_errors"] for r in bugs),
        "bug_programs_with_unrelated_errors": sum(r["unrelated_errors"] > 0 for r in bugs),
        "runs_without_report": sum(bool(r["error"]) and not r["findings"] for r in rows),
    }


def found_cell(row: dict) -> str:
    if row["error"] and not row["findings"]:
        return row["error"]
    parts = []
    for f in row["findings"]:
        s = f"{f['id']}({(f['severity'] or '?')[0].upper()})"
        if f.get("caused_by"):
            s += f"<-{f['caused_by']}"
        if f.get("status") == "resolved":
            s += "[resolved]"
        parts.append(s)
    return ", ".join(parts) or "-"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="programs run in parallel (default 2)")
    ap.add_argument("--only", action="append", metavar="PATTERN",
                    help="glob on program names, e.g. 'bug_label_noise*' (repeatable)")
    ap.add_argument("--json", metavar="OUT", help="write the rates and per-program rows here")
    ap.add_argument("--python", default=sys.executable, help="interpreter with trainmedic installed")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per program (default 600)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/MKL threads per program (default 1; 0 leaves the environment as is)")
    args = ap.parse_args(argv)

    paths = programs(args.only)
    if not paths:
        print("no program matches", file=sys.stderr)
        return 2
    command = "python benchmarks/detection.py" + "".join(f" {shlex.quote(a)}" for a in
                                                         (argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now()
    print(f"## Detection (`{command}`)\n")
    print(f"- date: {started:%Y-%m-%d %H:%M}")
    print(f"- machine: {machine()}")
    print(f"- code: {git_head()}")
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''} each" if args.threads > 0 \
        else "threads as the environment sets them"
    print(f"- programs: {len(paths)} from tests/zoo, {args.jobs} at a time ({threads}), each "
          f"`python -m trainmedic.cli run --no-live --json R.json PROGRAM` in a temporary folder\n",
          flush=True)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda p: judge(run_one(p, args.python, args.timeout, args.threads)),
                             paths))
    wall = time.perf_counter() - t0

    print("| program | expected | found (severity; <-caused_by) | first | verdict | s |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["kind"], r["program"])):
        print(f"| {r['program']} | {r['expect'] or '-'} | {found_cell(r)} | {r['first'] or '-'} | "
              f"{r['verdict']} | {r['seconds']} |")

    s = rates(rows)

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.0f}%"
    print()
    print(f"- detection rate: **{pct(s['detection_rate'])}** ({s['detected']}/{s['bug_programs']} bug "
          f"programs report their EXPECT id)")
    print(f"- root-cause rate: **{pct(s['root_cause_rate'])}** ({s['root_cause']}/{s['bug_programs']} "
          f"report it first)")
    print(f"- false-alarm rate: **{pct(s['false_alarm_rate'])}** ({s['false_alarms']}/"
          f"{s['clean_programs']} clean programs with an error finding; "
          f"{s['false_alarms_resolved_only']} of them with resolved errors only)")
    print(f"- warnings per clean run: **{s['warnings_per_clean_run']}**")
    print(f"- unrelated errors in bug programs: **{s['unrelated_errors_in_bug_programs']}** (in "
          f"{s['bug_programs_with_unrelated_errors']} programs; errors neither EXPECT nor caused by it)")
    if s["runs_without_report"]:
        print(f"- runs without a report: {s['runs_without_report']}")
    print(f"- wall time: {wall:.0f} s")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": command, "date": started.isoformat(timespec="seconds"),
                       "machine": machine(), "code": git_head(), "wall_s": round(wall, 1),
                       "rates": s, "programs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
