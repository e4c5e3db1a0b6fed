"""Tuning benchmark: what pruning by diagnosis saves on a search that includes diverging LRs.

    python benchmarks/tune.py                       # 40 TPE trials per arm, seed 0
    python benchmarks/tune.py --trials 20 --json tune.json

The program is benchmarks/tune_programs/digits_cnn.py (a small CNN on the digits, SGD with
momentum, 8 epochs), tuned by `trainmedic.search.tune_script` (each trial in this process)
over lr=log:1e-3:10 (above about 0.5 it diverges), weight_decay=log:1e-6:1e-1 and
batch_size=choice:32,64,128, maximising val_acc, with the same TPE sampler and seed in three
arms:

1. no pruning (Optuna's NopPruner, no diagnosis): the reference; its best value B;
2. Optuna's median pruner on val_acc per epoch;
3. diagnosis pruning (error findings of the training dynamics stop a trial) + the median pruner.

Per arm: the best value, the trial-steps (optimizer steps summed over trials) and wall seconds
until the first trial that reaches B - `--tolerance` (one validation image is 0.0025), and the
totals over all trials. Target (issue 10): arm 3 reaches B with <= 50% of arm 1's trial-steps.
Printed as Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

from _programs import ROOT, git_head, machine  # beside this script

sys.path.insert(0, os.path.join(ROOT, "src"))
PROGRAM = os.path.join(ROOT, "benchmarks", "tune_programs", "digits_cnn.py")
SPACE = ["lr=log:1e-3:10", "weight_decay=log:1e-6:1e-1", "batch_size=choice:32,64,128"]
ARMS = [("no pruning", "none", False), ("median pruner", "median", False),
        ("diagnosis + median", "median", True)]


def run_arm(pruner: str, diagnosis: bool, trials: int, seed: int, out_dir: str) -> list[dict]:
    """The arm's trials in order: state, value, steps, seconds, why pruned."""
    import optuna
    from trainmedic.search import tune_script
    result = tune_script(PROGRAM, [], SPACE, trials=trials, metric="val_acc", sampler="tpe",
                         seed=seed, pruner=pruner, diagnosis=diagnosis, out_dir=out_dir,
                         echo=lambda m: print(m, file=sys.stderr))
    rows = []
    for t in result.study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0.0
        rows.append({"number": t.number, "state": t.state.name, "params": t.params,
                     "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                     "steps": int(t.user_attrs.get("steps") or 0), "seconds": seconds,
                     "pruned_by": t.user_attrs.get("pruned_by")})
    return rows


def reach(rows: list[dict], target: float) -> dict:
    """Trial-steps and seconds summed up to the first trial reaching ``target`` (None: never)."""
    steps = seconds = 0.0
    for r in rows:
        steps += r["steps"]
        seconds += r["seconds"]
        if r["value"] is not None and r["value"] >= target:
            return {"trial": r["number"], "steps": int(steps), "seconds": round(seconds, 1)}
    return {"trial": None, "steps": None, "seconds": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.005)
    ap.add_argument("--json", help="also write every trial here")
    args = ap.parse_args()
    started = time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        for i, (name, pruner, diagnosis) in enumerate(ARMS):
            results[name] = run_arm(pruner, diagnosis, args.trials, args.seed, os.path.join(tmp, f"arm{i}"))
    best = max(r["value"] for r in results[ARMS[0][0]] if r["value"] is not None)
    target = best - args.tolerance
    ref = reach(results[ARMS[0][0]], target)
    ref_total = sum(r["steps"] for r in results[ARMS[0][0]])
    print(f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python "
          f"benchmarks/tune.py --trials {args.trials} --seed {args.seed}`\n")
    print(f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}\n- machine: {machine()}\n- code: {git_head()}")
    print(f"- space: {', '.join(SPACE)}; TPE seed {args.seed}; {args.trials} trials per arm; "
          f"metric val_acc; target: the unpruned best {best:.4f} - {args.tolerance} = {target:.4f}\n")
    print("| arm | best val_acc | trial reaching the target | trial-steps to reach | vs no pruning "
          "| seconds to reach | complete / pruned (diagnosis, pruner) | trial-steps in all | seconds in all |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _, _ in ARMS:
        rows = results[name]
        got = reach(rows, target)
        values = [r["value"] for r in rows if r["value"] is not None]
        pruned = [r for r in rows if r["state"] == "PRUNED"]
        by_diag = sum(1 for r in pruned if r["pruned_by"] and not str(r["pruned_by"]).startswith(
            ("MedianPruner", "non-finite")))
        share = f"{got['steps'] / ref['steps']:.0%}" if got["steps"] and ref["steps"] else "-"
        top = f"{max(values):.4f}" if values else "-"
        print(f"| {name} | {top} | {got['trial']} | {got['steps']} | {share} | {got['seconds']} "
              f"| {len(values)} / {len(pruned)} ({by_diag}, {len(pruned) - by_diag}) "
              f"| {sum(r['steps'] for r in rows)} | {sum(r['seconds'] for r in rows):.1f} |")
    print(f"\n- unpruned trial-steps in all: {ref_total}; wall time of the benchmark: {time.time() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"best": best, "target": target, "arms": results}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
