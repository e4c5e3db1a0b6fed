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
with <= 50% of arm 1's trial-steps. Then where those trial-steps went (complete trials, trials
the pruner stopped, trials diagnosis stopped), diagnosis's false alarms (trials of arm 1, which
runs watched but never stopped, that end healthy, val_acc >= HEALTHY, with an error finding
diagnosis prunes on reported before their last step, when it would have stopped them), and the
checkup's LR suggestion (the study's ``lr_check``) beside the best trial's lr.
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
HEALTHY = 0.9        # val_acc of a trial that trained fine (chance is 0.1; the best about 0.98)


def run_arm(pruner: str, diagnosis: bool, trials: int, seed: int, out_dir: str,
            every: int) -> tuple[list[dict], dict]:
    """The arm's trials in order (state, value, steps, seconds, why pruned, findings, the first
    step of each finding diagnosis prunes on) and the study's LR check."""
    import optuna
    from trainmedic.search import tune_script
    result = tune_script(PROGRAM, [], SPACE, trials=trials, metric="val_acc", sampler="tpe",
                         seed=seed, pruner=pruner, diagnosis=diagnosis, out_dir=out_dir, every=every,
                         echo=lambda m: print(m, file=sys.stderr))
    rows = []
    for t in result.study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0.0
        with open(os.path.join(t.user_attrs["run_dir"], "report.json")) as fh:
            alarms = {f["id"]: f["step"] for f in json.load(fh)["findings"] if f["id"] in PRUNE_ON}
        rows.append({"number": t.number, "state": t.state.name, "params": t.params,
                     "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                     "steps": int(t.user_attrs.get("steps") or 0), "seconds": seconds,
                     "pruned_by": t.user_attrs.get("pruned_by"), "findings": t.user_attrs.get("findings", []),
                     "alarms": alarms})
    return rows, result.study.user_attrs["lr_check"]


def reach(rows: list[dict], target: float) -> dict:
    """Trial-steps and seconds summed up to the first trial reaching ``target`` (None: never)."""
    steps = seconds = 0.0
    for r in rows:
        steps += r["steps"]
        seconds += r["seconds"]
        if r["value"] is not None and r["value"] >= target:
            return {"trial": r["number"], "steps": int(steps), "seconds": round(seconds, 1)}
    return {"trial": None, "steps": None, "seconds": None}


def best_lr(rows: list[dict]) -> float:
    return max((r for r in rows if r["value"] is not None), key=lambda r: r["value"])["params"]["lr"]


def outcome(r: dict) -> str:
    if r["state"] != "PRUNED":
        return "complete" if r["value"] is not None else "failed"
    return "diagnosis" if r["pruned_by"] in PRUNE_ON else "pruner"


def spent(rows: list[dict], until: int | None) -> dict[str, tuple[int, int]]:
    """(trials, trial-steps) by outcome, over the trials up to number ``until`` (all: None)."""
    out: dict[str, tuple[int, int]] = {}
    for r in rows if until is None else rows[:until + 1]:
        n, steps = out.get(outcome(r), (0, 0))
        out[outcome(r)] = (n + 1, steps + r["steps"])
    return out


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
    checks: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        for seed in args.seeds:
            results[seed], checks[seed] = {}, []
            for i, (name, pruner, diagnosis) in enumerate(ARMS):
                results[seed][name], check = run_arm(pruner, diagnosis, args.trials, seed,
                                                     os.path.join(tmp, f"s{seed}-arm{i}"), args.every)
                checks[seed].append(check)
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
    print("\nWhere the trial-steps to reach the target went (trials, trial-steps; all trials when "
          "it never did), by what became of each trial:\n")
    print("| seed | arm | complete | stopped by the pruner | stopped by diagnosis |")
    print("|---|---|---|---|---|")
    for seed, arms in results.items():
        best = max(r["value"] for r in arms[ARMS[0][0]] if r["value"] is not None)
        for name, _, _ in ARMS:
            got = spent(arms[name], reach(arms[name], best - args.tolerance)["trial"])
            print(f"| {seed} | {name} | " + " | ".join(
                f"{got[k][0]}, {got[k][1]}" if k in got else "-"
                for k in ("complete", "pruner", "diagnosis")) + " |")
    healthy = [(seed, r) for seed, arms in results.items() for r in arms[ARMS[0][0]]
               if r["value"] is not None and r["value"] >= HEALTHY]
    alarms = [(seed, r) for seed, r in healthy if any(step < r["steps"] for step in r["alarms"].values())]
    late = sum(1 for _, r in healthy if r["alarms"]) - len(alarms)
    print(f"\n- diagnosis false alarms: {len(alarms)} of the {len(healthy)} trials of the unpruned "
          f"arm that end with val_acc >= {HEALTHY} show an error finding diagnosis prunes on before "
          f"their last step" + "".join(
              f"; seed {seed} trial {r['number']} ({', '.join(f'{k} at step {v}' for k, v in r['alarms'].items())} "
              f"of {r['steps']}, val_acc {r['value']:.4f})" for seed, r in alarms)
          + f"; {late} more only at their last read, after training, when diagnosis no longer acts")
    for seed, arms in results.items():
        check = checks[seed][0]
        if "suggested" not in check:
            print(f"- seed {seed}: the LR check did not run: {check['reason']}")
            continue
        lrs = ", ".join(f"{name} {best_lr(arms[name]):.2g}" for name, _, _ in ARMS)
        seconds = ", ".join(f"{c['seconds']:.1f}" for c in checks[seed])
        print(f"- seed {seed}: the checkup's LR range test suggests lr {check['suggested']:.2g} (the "
              f"script as written; {seconds} s before the first trial of each arm, the first one "
              f"paying the script's imports); the best trial's lr: {lrs}")
    print(f"- wall time of the benchmark: {time.time() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"trials": {str(k): v for k, v in results.items()},
                       "lr_check": {str(k): v for k, v in checks.items()}}, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
