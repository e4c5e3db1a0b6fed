"""Repair benchmark: planted-bug programs repaired in place by `trainmedic run --repair`.

    python benchmarks/repair.py                                  # every pair, one at a time
    python benchmarks/repair.py --programs 'lr_*' --json repair.json

Each pair in benchmarks/repair_programs is a bug program `bug_<name>.py` (its FINDING and the
REMEDY expected to be kept are module constants) and its clean twin `clean_<name>.py`, identical
but for the bug. Each program prints `FINAL <metric>=<value>` as its last stdout line, a metric
where higher is better (validation accuracy, balanced accuracy, R^2). Four runs per pair, each
in its own temporary folder and run directory, with OMP_NUM_THREADS=MKL_NUM_THREADS=--threads:

1. clean twin, plain:       <python> clean_<name>.py
2. bug program, plain:      <python> bug_<name>.py
3. bug program, repaired:   <python> -m trainmedic.cli run --repair --no-live --run-dir D bug_<name>.py
4. clean twin, repair on:   <python> -m trainmedic.cli run --repair --run-dir D clean_<name>.py

Judged:

- repaired: run 3 kept a remedy (outcome kept, or unverified: still on when the run ended) and
  its metric falls short of the clean twin's by at most 10% of |clean metric|;
- the expected finding fired (among run 3's repair attempts, or in its findings) and the expected
  remedy is the one kept (a different kept remedy still counts as repaired);
- clean twin untouched: run 4's stdout is byte-identical to run 1's and run 4 attempted no repair.

Printed as Markdown (a header, one row per pair, a summary): % repaired, median of (in-run repair
wall time / plain bug wall time), clean twins identical. Wall times include interpreter start
and imports. `--json` also keeps every run's REPAIR lines (stderr) and repair records.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import fnmatch
import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from _programs import ROOT, constant, git_head, machine  # beside this script
PROGRAMS = os.path.join(ROOT, "benchmarks", "repair_programs")
TOLERANCE = 0.10                  # a repaired metric may fall short of the clean one by this much
FINAL = re.compile(rb"^FINAL\s+([\w.^-]+)=(\S+)\s*$")


def pairs(patterns: list[str] | None) -> list[str]:
    """Names of the pairs (bug_<name>.py with a clean_<name>.py) matching any pattern."""
    names = sorted(os.path.basename(p)[4:-3] for p in glob.glob(os.path.join(PROGRAMS, "bug_*.py"))
                   if os.path.exists(os.path.join(PROGRAMS, "clean_" + os.path.basename(p)[4:])))
    if not patterns:
        return names
    pats = [re.sub(r"^(bug_|clean_)", "", p.removesuffix(".py")) for p in patterns]
    return [n for n in names if any(fnmatch.fnmatch(n, p) for p in pats)]


def execute(cmd: list[str], timeout: float, threads: int) -> dict:
    """Run one command in a fresh temporary folder: wall time, exit code, stdout (bytes), stderr,
    the FINAL metric, and the run directory's report.json when there is one."""
    env = dict(os.environ)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="tm-repair-") as tmp:
        run_dir = os.path.join(tmp, "run")
        cmd = [run_dir if c == "{run_dir}" else c for c in cmd]
        out = {"cmd": cmd, "exit_code": None, "seconds": None, "metric": None, "value": None,
               "error": None, "stdout": b"", "stderr": "", "report": None}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, timeout=timeout)
            out.update(exit_code=proc.returncode, stdout=proc.stdout,
                       stderr=proc.stderr.decode("utf-8", "replace"))
        except subprocess.TimeoutExpired:
            out["error"] = f"timed out after {timeout:.0f} s"
        out["seconds"] = round(time.perf_counter() - t0, 2)
        lines = out["stdout"].strip().splitlines()
        m = FINAL.match(lines[-1]) if lines else None
        if m:
            out["metric"], out["value"] = m.group(1).decode(), float(m.group(2))
        elif not out["error"]:
            tail = out["stderr"].strip().splitlines()[-1:] or ["no FINAL line"]
            out["error"] = f"exit {out['exit_code']}: {tail[0][:200]}"
        try:
            with open(os.path.join(run_dir, "report.json"), encoding="utf-8") as f:
                out["report"] = json.load(f)
        except (OSError, ValueError):
            pass
        out["fix"] = read_fix(run_dir)
    return out


def read_fix(out_dir: str) -> dict | None:
    """`trainmedic fix`'s fix.json in ``out_dir``, with the FINAL metric of the winner's run."""
    try:
        with open(os.path.join(out_dir, "fix.json"), encoding="utf-8") as f:
            fix = json.load(f)
    except (OSError, ValueError):
        return None
    fix["winner_value"] = None
    for c in fix.get("candidates", []):
        if c["remedy"] == fix.get("winner"):
            try:
                with open(os.path.join(c["run_dir"], "output.txt"), "rb") as f:
                    finals = [FINAL.match(ln) for ln in f.read().splitlines()]
                fix["winner_value"] = next((float(m.group(2)) for m in reversed(finals) if m), None)
            except OSError:
                pass
    return fix


def run_pair(name: str, python: str, timeout: float, threads: int, fix: bool = False) -> dict:
    bug, clean = (os.path.join(PROGRAMS, f"{k}_{name}.py") for k in ("bug", "clean"))
    tm = [python, "-m", "trainmedic.cli", "run", "--repair", "--run-dir", "{run_dir}"]
    runs = {"clean": execute([python, clean], timeout, threads),
            "bug": execute([python, bug], timeout, threads),
            "repair": execute(tm[:5] + ["--no-live"] + tm[5:] + [bug], timeout, threads),
            "clean_repair": execute(tm + [clean], timeout, threads)}
    row = judge(name, constant(bug, "FINDING", None), constant(bug, "REMEDY", None), runs)
    if fix:
        run = execute([python, "-m", "trainmedic.cli", "fix", "--out-dir", "{run_dir}", bug],
                      timeout * 8, threads)
        f = run["fix"] or {}
        short = (None if f.get("winner_value") is None or row["clean"] is None else
                 (row["clean"] - f["winner_value"]) / max(abs(row["clean"]), 1e-12))
        row["fix"] = {"winner": f.get("winner"), "value": f.get("winner_value"),
                      "candidates": [(c["remedy"], c["status"]) for c in f.get("candidates", [])],
                      "seconds": run["seconds"],
                      "ratio": run["seconds"] / runs["bug"]["seconds"] if runs["bug"]["seconds"] else None,
                      "ok": f.get("winner") is not None and short is not None and short <= TOLERANCE}
    return row


def judge(name: str, finding: str | None, remedy: str | None, runs: dict) -> dict:
    rep = runs["repair"]["report"] or {}
    info = rep.get("run", {})
    attempts = info.get("repairs", []) or []
    kept = [a for a in attempts if a.get("outcome") in ("kept", "unverified")]
    fired = list(dict.fromkeys(a.get("finding") for a in attempts))
    findings = [f.get("id") for f in rep.get("findings", [])]
    clean_v, bug_v, rep_v = (runs[k]["value"] for k in ("clean", "bug", "repair"))

    def shortfall(v):
        if v is None or clean_v is None:
            return None
        return (clean_v - v) / max(abs(clean_v), 1e-12)
    short = shortfall(rep_v)
    crep = runs["clean_repair"]
    crep_attempts = ((crep["report"] or {}).get("run", {}).get("repairs") or [])
    row = {
        "pair": name, "finding": finding, "remedy": remedy,
        "metric": runs["clean"]["metric"],
        "clean": clean_v, "bug": bug_v, "repaired": rep_v,
        "bug_shortfall": shortfall(bug_v), "repaired_shortfall": short,
        "fired": fired, "findings": findings,
        "expected_fired": finding in fired or finding in findings,
        "kept": [a.get("remedy") for a in kept],
        "kept_outcomes": [a.get("outcome") for a in kept],
        "expected_kept": remedy in [a.get("remedy") for a in kept],
        "attempts": [{k: a.get(k) for k in ("finding", "remedy", "outcome", "step",
                                            "rolled_back_to_step", "loss_before", "loss_after",
                                            "reason")} for a in attempts],
        "given_up": info.get("repairs_given_up", []) or [],
        "repair_lines": [ln for ln in runs["repair"]["stderr"].splitlines()
                         if ln.startswith("trainmedic REPAIR")],
        "repaired_ok": bool(kept) and short is not None and short <= TOLERANCE,
        "seconds": {k: runs[k]["seconds"] for k in runs},
        "repair_time_ratio": (runs["repair"]["seconds"] / runs["bug"]["seconds"]
                              if runs["repair"]["seconds"] and runs["bug"]["seconds"] else None),
        "clean_identical": (not runs["clean"]["error"] and not crep["error"]
                            and crep["stdout"] == runs["clean"]["stdout"]),
        "clean_repair_attempts": len(crep_attempts),
        "clean_findings": [f"{f.get('id')}({(f.get('severity') or '?')[0].upper()})"
                           for f in (crep["report"] or {}).get("findings", [])],
        "errors": {k: runs[k]["error"] for k in runs if runs[k]["error"]},
    }
    return row


def summary(rows: list[dict]) -> dict:
    n = len(rows)
    ratios = [r["repair_time_ratio"] for r in rows if r["repair_time_ratio"]]
    return {
        "pairs": n,
        "repaired": sum(r["repaired_ok"] for r in rows),
        "repaired_rate": round(sum(r["repaired_ok"] for r in rows) / n, 3) if n else None,
        "remedy_kept": sum(bool(r["kept"]) for r in rows),
        "expected_finding_fired": sum(r["expected_fired"] for r in rows),
        "expected_remedy_kept": sum(r["expected_kept"] for r in rows),
        "bug_already_within_tolerance": sum(r["bug_shortfall"] is not None
                                            and r["bug_shortfall"] <= TOLERANCE for r in rows),
        "median_repair_time_ratio": round(statistics.median(ratios), 3) if ratios else None,
        "clean_identical": sum(r["clean_identical"] for r in rows),
        "clean_with_repair_attempts": sum(r["clean_repair_attempts"] > 0 for r in rows),
    }


def fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", action="append", metavar="GLOB",
                    help="glob on pair names, e.g. 'lr_*' or 'bug_dead_relu' (repeatable; "
                         "default: every pair)")
    ap.add_argument("--jobs", type=int, default=1, help="pairs run in parallel (default 1)")
    ap.add_argument("--json", metavar="OUT", help="write the summary and per-pair rows here")
    ap.add_argument("--python", default=sys.executable, help="interpreter with trainmedic installed")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run (default 300)")
    ap.add_argument("--fix", action="store_true",
                    help="also time `trainmedic fix` on each bug program (winner, its FINAL metric)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/MKL threads per run (default 1; 0 leaves the environment as is)")
    args = ap.parse_args(argv)

    names = pairs(args.programs)
    if not names:
        print("no pair matches", file=sys.stderr)
        return 2
    command = "python benchmarks/repair.py" + "".join(f" {shlex.quote(a)}" for a in
                                                      (argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now()
    print(f"## Repair (`{command}`)\n")
    print(f"- date: {started:%Y-%m-%d %H:%M}")
    print(f"- machine: {machine()}")
    print(f"- code: {git_head()}")
    print(f"- pairs: {len(names)} from benchmarks/repair_programs, {args.jobs} at a time, "
          f"OMP_NUM_THREADS={args.threads if args.threads > 0 else '(as set)'}; repaired = a remedy "
          f"kept (or unverified at the end) and the metric at most {TOLERANCE:.0%} of |clean| below "
          f"the clean twin's\n", flush=True)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda n: run_pair(n, args.python, args.timeout, args.threads, args.fix),
                             names))
    wall = time.perf_counter() - t0

    print("| pair | metric | clean | bug | repaired | repaired? | expected finding -> remedy | "
          "fired | attempts (outcome) | clean s | bug s | repair s | repair/bug | clean twin |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        attempts = ", ".join(f"{a['remedy']} ({a['outcome']})" for a in r["attempts"]) or "none"
        if r["given_up"]:
            attempts += "; gave up"
        verdict = "**yes**" if r["repaired_ok"] else "NO"
        if r["errors"]:
            verdict += " (" + "; ".join(f"{k}: {v}" for k, v in r["errors"].items()) + ")"
        twin = ("identical" if r["clean_identical"] else "DIFFERS") + \
            (f", {r['clean_repair_attempts']} repair attempts" if r["clean_repair_attempts"] else "")
        fired = ", ".join(r["fired"]) or "none"
        if not r["expected_fired"]:
            fired += f" (no {r['finding']})"
        ratio = f"{r['repair_time_ratio']:.2f}x" if r["repair_time_ratio"] else "-"
        sec = r["seconds"]
        print(f"| {r['pair']} | {r['metric'] or '-'} | {fmt(r['clean'])} | {fmt(r['bug'])} | "
              f"{fmt(r['repaired'])} | {verdict} | {r['finding']} -> {r['remedy']} | {fired} | "
              f"{attempts} | {fmt(sec['clean'])} | {fmt(sec['bug'])} | {fmt(sec['repair'])} | "
              f"{ratio} | {twin} |")

    s = summary(rows)
    n = s["pairs"]
    print()
    print(f"- repaired: **{s['repaired']}/{n} ({100 * s['repaired_rate']:.0f}%)**; a remedy was kept "
          f"in {s['remedy_kept']}/{n}")
    print(f"- expected finding fired: {s['expected_finding_fired']}/{n}; expected remedy kept: "
          f"{s['expected_remedy_kept']}/{n}")
    print(f"- bug programs already within {TOLERANCE:.0%} of their clean twin without repair: "
          f"{s['bug_already_within_tolerance']}/{n}")
    print(f"- median in-run repair time / plain bug time: **{fmt(s['median_repair_time_ratio'])}x**")
    print(f"- clean twins byte-identical under `run --repair`: **{s['clean_identical']}/{n}**; "
          f"with a repair attempt: {s['clean_with_repair_attempts']}/{n}")
    print(f"- wall time: {wall:.0f} s")

    if args.fix:
        print("\n| pair | fix: candidates (status) | verified winner | its metric | fixed? | fix s | fix/bug |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            f = r["fix"]
            cands = ", ".join(f"{c} ({st})" for c, st in f["candidates"]) or "none"
            ratio = f"{f['ratio']:.2f}x" if f["ratio"] else "-"
            print(f"| {r['pair']} | {cands} | {f['winner'] or '-'} | {fmt(f['value'])} | "
                  f"{'**yes**' if f['ok'] else 'NO'} | {fmt(f['seconds'])} | {ratio} |")
        fixed = sum(r["fix"]["ok"] for r in rows)
        ratios = [r["fix"]["ratio"] for r in rows if r["fix"]["ratio"]]
        s["fixed"], s["median_fix_time_ratio"] = fixed, round(statistics.median(ratios), 3) if ratios else None
        print(f"\n- fixed by `trainmedic fix` (verified winner within {TOLERANCE:.0%} of the clean twin): "
              f"**{fixed}/{n}**; median fix time / plain bug time: **{fmt(s['median_fix_time_ratio'])}x**")

    failed = [r for r in rows if not r["repaired_ok"]]
    if failed:
        print("\nNot repaired (the REPAIR lines of the repaired run):\n")
        for r in failed:
            print(f"- {r['pair']}: findings {', '.join(r['findings']) or 'none'}")
            for line in r["repair_lines"] or ["(no REPAIR line)"]:
                print(f"  - `{line}`")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": command, "date": started.isoformat(timespec="seconds"),
                       "machine": machine(), "code": git_head(), "wall_s": round(wall, 1),
                       "tolerance": TOLERANCE, "summary": s, "pairs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
