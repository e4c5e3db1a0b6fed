"""Tuning benchmark: what pruning by diagnosis saves on a search that includes diverging LRs.

    python benchmarks/tune.py                       # 40 TPE trials per arm, seeds 0 1 2
    python benchmarks/tune.py --trials 20 --seeds 0 --json tune.json

The program is benchmarks/tune_programs/digits_cnn.py (a small CNN on the digits, SGD with
momentum, 8 epochs), tuned by `trainmedic.search.tune_script` (each trial in this process)
over lr=log:1e-3:10 (above about 0.2 it diverges), weight_decay=log:1e-6:1e-1 and
batch_size=choice:32,64,128, maximising val_acc, with the same TPE sampler and seed in three
arms, for each seed:

1. no pruning (Optuna's NopPruner, no diagnosis): the reference; its best value B;
2. Optuna's median pruner on val_acc per epoch;
3. diagnosis pruning (error findings of the training dynamics stop a trial) + the median pruner.

Per arm: the best value, the trial-steps (optimizer steps summed over trials) and wall seconds
until the first trial that reaches B - `--tolerance` (one validation image is 0.0025), and the
totals over all trials; then, per arm, the median over seeds. Target (issue 10): arm 3 reaches B
with <= 50% of arm 1's trial-steps.
Printed as Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

from _programs import ROOT, git_head, machine  # beside this script

sys.path.insert(0, os.path.join(ROOT, "src"))
from trainmedic.search.trial import PRUNE_ON  # noqa: E402
PROGRAM = os.path.join(ROOT, "benchmarks", "tune_programs", "digits_cnn.py")
SPACE = ["lr=log:1e-3:10", "weight_decay=log:1e-6:1e-1", "batch_size=choice:32,64,128"]
ARMS = [("no pruning", "none", False), ("median pruner", "median", False),
        ("diagnosis + median", "median", True)]


def run_arm(pruner: str, diagnosis: bool, trials: int, seed: int, out_dir: str, every: int) -> list[dict]:
    """The arm's trials in order: state, value, steps, seconds, why pruned."""
    import optuna
    from trainmedic.search import tune_script
    result = tune_script(PROGRAM, [], SPACE, trials=trials, metric="val_acc", sampler="tpe",
                         seed=seed, pruner=pruner, diagnosis=diagnosis, out_dir=out_dir, every=every,
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tolerance", type=float, default=0.005)
    ap.add_argument("--every", type=int, default=25, help="steps between the monitor's reads")
    ap.add_argument("--json", help="also write every trial here")
    args = ap.parse_args()
    started = time.time()
    results: dict[int, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        for seed in args.seeds:
            results[seed] = {name: run_arm(pruner, diagnosis, args.trials, seed,
                                           os.path.join(tmp, f"s{seed}-arm{i}"), args.every)
                             for i, (name, pruner, diagnosis) in enumerate(ARMS)}
    print(f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} python "
          f"benchmarks/tune.py --trials {args.trials} --seeds {' '.join(map(str, args.seeds))} "
          f"--every {args.every}`\n")
    print(f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}\n- machine: {machine()}\n- code: {git_head()}")
    print(f"- space: {', '.join(SPACE)}; TPE; {args.trials} trials per arm and seed; metric val_acc; "
          f"target per seed: the unpruned arm's best - {args.tolerance}\n")
    print("| seed | arm | best val_acc | trial reaching the target | trial-steps to reach | vs no pruning "
          "| seconds to reach | complete / pruned (diagnosis, pruner) | trial-steps in all | vs no pruning |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    shares: dict[str, list[float]] = {name: [] for name, _, _ in ARMS}
    totals: dict[str, list[float]] = {name: [] for name, _, _ in ARMS}
    for seed, arms in results.items():
        ref_rows = arms[ARMS[0][0]]
        best = max(r["value"] for r in ref_rows if r["value"] is not None)
        ref, ref_total = reach(ref_rows, best - args.tolerance), sum(r["steps"] for r in ref_rows)
        for name, _, _ in ARMS:
            rows = arms[name]
            got = reach(rows, best - args.tolerance)
            values = [r["value"] for r in rows if r["value"] is not None]
            pruned = [r for r in rows if r["state"] == "PRUNED"]
            by_diag = sum(1 for r in pruned if r["pruned_by"] in PRUNE_ON)
            total = sum(r["steps"] for r in rows)
            share = got["steps"] / ref["steps"] if got["steps"] and ref["steps"] else None
            if share is not None:
                shares[name].append(share)
            totals[name].append(total / ref_total)
            top = f"{max(values):.4f}" if values else "-"
            print(f"| {seed} | {name} | {top} | {got['trial']} | {got['steps']} | "
                  f"{f'{share:.0%}' if share is not None else 'never'} | {got['seconds']} "
                  f"| {len(values)} / {len(pruned)} ({by_diag}, {len(pruned) - by_diag}) "
                  f"| {total} | {total / ref_total:.0%} |")
    print()
    for name, _, _ in ARMS[1:]:
        reached = f"{len(shares[name])}/{len(results)} seeds"
        med = f"{statistics.median(shares[name]):.0%}" if shares[name] else "-"
        print(f"- {name}: reached the unpruned best (within {args.tolerance}) in {reached}, median "
              f"{med} of the unpruned trial-steps to get there; {statistics.median(totals[name]):.0%} "
              f"of its trial-steps in all (median)")
    print(f"- wall time of the benchmark: {time.time() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({str(k): v for k, v in results.items()}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
