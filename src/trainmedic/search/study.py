"""``trainmedic tune``: an Optuna study over an unmodified training script.

Each trial runs the script in this process (``trial.run_trial``) with its values routed in
(``routes``), watched by trainmedic, and is stopped early by diagnosis and by Optuna's pruner.
Trials live in an Optuna storage (``storage.open_storage``): a SQLite file in the output folder
by default, so ``workers`` processes on this machine share it; more machines join the same
study with ``--storage URL --study NAME``. A study that exists is resumed: finished trials
stay, and ``trials`` counts them. Before its first trial, a study records the learning rate the
checkup would suggest for the script as written (``lr_check``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import optuna

from trainmedic import run_metric
from trainmedic.search.lr_check import check_lr
from trainmedic.search.routes import plan
from trainmedic.search.space import make_sampler, parse_space
from trainmedic.search.storage import shown, open_storage
from trainmedic.search.summary import fmt
from trainmedic.search.trial import TrialFailed, run_trial

PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class TuneResult(NamedTuple):
    """A finished ``tune_script``: the study and the folder of its runs."""
    study: optuna.Study
    out_dir: str


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Optuna's pruner, with Optuna's defaults, fed with the metric per validation epoch:
    ``median`` (once 5 trials have completed), ``hyperband`` (successive halving over epochs),
    ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"--pruner {name!r} is not a pruner; expected one of {', '.join(PRUNERS)}")


def tune_script(script: str, args: Sequence[str] = (), params: Sequence[str] = (), *,
                trials: int = 40, metric: str = "val_loss", direction: str | None = None,
                sampler: str = "tpe", seed: int | None = None, grid_points: int = 5,
                storage: str | None = None, study_name: str | None = None, pruner: str = "median",
                diagnosis: bool = True, workers: int = 1, out_dir: str | None = None,
                every: int = 25, grace_period: int = 30,
                echo: Callable[[str], None] = print) -> TuneResult:
    """Tune ``script`` over ``params`` (``name=kind:spec`` texts, see ``space.parse_param``)
    until the study holds ``trials`` finished (complete or pruned) trials.
    ``workers`` > 1 starts that many processes in all on this machine. With a database storage,
    a trial whose worker went silent for ``grace_period`` seconds (killed) ends FAIL and is run
    again once. Bad input raises ValueError naming the argument, the value and what was
    expected. Once per study, before its first trial, the checkup's LR range test runs on the
    script as written (``lr_check.check_lr``): the study's ``lr_check`` user attribute."""
    if not os.path.isfile(script):
        raise ValueError(f"script={script!r} does not exist or is not a file")
    for name, v in (("--trials", trials), ("--workers", workers), ("--grace-period", grace_period)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} {v!r}: expected an integer >= 1")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"--direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    optuna.logging.set_verbosity(optuna.logging.ERROR)        # trainmedic says what happens
    space = parse_space(params)
    if not space:
        raise ValueError("--param: expected at least one parameter to tune (name=kind:spec)")
    with open(script, encoding="utf-8") as fh:
        routes = plan(space, fh.read())
    name = os.path.splitext(os.path.basename(script))[0]
    out_dir = os.path.abspath(out_dir or os.path.join(
        "trainmedic-runs", time.strftime("%Y%m%d-%H%M%S") + f"-tune-{name}"))
    os.makedirs(out_dir, exist_ok=True)
    if storage is None:
        storage = "sqlite:///" + os.path.join(out_dir, "study.db")
    study = optuna.create_study(
        storage=open_storage(storage, os.path.join(out_dir, "study.db"), grace_period=grace_period,
                             heartbeat_interval=max(1, grace_period // 3)),
        study_name=study_name or name, sampler=make_sampler(sampler, space, seed, grid_points),
        pruner=make_pruner(pruner), load_if_exists=True,
        direction=direction or ("maximize" if run_metric.maximized(metric) else "minimize"))
    study.set_user_attr("settings", {"script": script, "args": list(args), "params": list(params),
                                     "metric": metric, "routes": routes, "sampler": sampler,
                                     "pruner": pruner, "diagnosis": diagnosis})
    echo(f"trainmedic tune: {script}, {len(space)} parameter(s) "
         f"({', '.join(f'{k} via {v}' for k, v in routes.items())}), study {study.study_name!r} "
         f"in {shown(storage)}, runs in {out_dir}")
    if "lr_check" not in study.user_attrs:
        check = check_lr(script, list(args), os.path.join(out_dir, "lr-check.txt"))
        study.set_user_attr("lr_check", check)
        echo("trainmedic tune: the checkup's LR range test on the script as written: "
             + (f"lr {check['suggested']:.2g} ({check['seconds']} s)" if "suggested" in check
                else f"did not run ({check['reason']})"))
    helpers: list[subprocess.Popen] = []
    try:
        for i in range(1, workers):
            helpers.append(_spawn_worker(
                i, script, args, params, trials=trials, metric=metric,
                direction=study.direction.name.lower(), sampler=sampler, seed=seed,
                grid_points=grid_points, storage=storage, study=study.study_name, pruner=pruner,
                diagnosis=diagnosis, out_dir=out_dir, every=every, grace_period=grace_period))
        optimize(study, script, args, space, routes, trials=trials, metric=metric,
                 diagnosis=diagnosis, out_dir=out_dir, every=every, echo=echo)
    except BaseException:               # bad input or Ctrl-C: the other workers stop too
        for proc in helpers:
            proc.terminate()
        raise
    finally:
        for i, proc in enumerate(helpers, 1):
            if proc.wait() not in (0, -15):          # -15: stopped by us (SIGTERM)
                echo(f"trainmedic tune: worker {i} ended with exit code {proc.returncode}; "
                     f"see {os.path.join(out_dir, f'worker-{i}.txt')}")
    return TuneResult(study, out_dir)


def optimize(study: optuna.Study, script: str, args: Sequence[str], space: dict, routes: dict, *,
             trials: int, metric: str, diagnosis: bool, out_dir: str, every: int,
             echo: Callable[[str], None] = print) -> None:
    """This process's share of the work: trials until the study holds ``trials`` finished ones.
    A crashed script fails its trial and the study goes on; bad input stops it."""
    def objective(trial: optuna.Trial) -> float:
        return run_trial(trial, script, list(args), space, routes, metric=metric, out_dir=out_dir,
                         every=every, diagnosis=diagnosis)

    def said(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        echo(_trial_line(trial))

    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished >= trials:                          # a resumed study that is already done
        return
    study.optimize(objective, n_trials=trials - finished, catch=(TrialFailed,),
                   callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED), said])


def _trial_line(t: optuna.trial.FrozenTrial) -> str:
    params = ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
    steps = t.user_attrs.get("steps")
    if t.state == optuna.trial.TrialState.COMPLETE:
        what = f"{fmt(t.value)}"
    elif t.state == optuna.trial.TrialState.PRUNED:
        what = f"pruned ({t.user_attrs.get('pruned_reason') or t.user_attrs.get('pruned_by', 'pruner')})"
    else:
        what = t.state.name.lower()
    return f"  trial {t.number:3d}: {what}  [{params}]" + (f"  {steps} steps" if steps is not None else "")


def _spawn_worker(i: int, script: str, args: Sequence[str], params: Sequence[str], *,
                  seed: int | None, **options: Any) -> subprocess.Popen:
    """Another ``trainmedic tune --worker`` process on the same study (its own seed), its
    output in ``<out_dir>/worker-<i>.txt``."""
    argv = [sys.executable, "-m", "trainmedic.cli", "tune", "--worker"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag if value else "--no-" + flag[2:]]
        else:
            argv += [flag, str(value)]
    if seed is not None:            # the grid's workers share its cell order; others must not
        argv += ["--seed", str(seed if options["sampler"] == "grid" else seed + i)]
    for p in params:
        argv += ["--param", p]
    argv += [script, *args]
    with open(os.path.join(options["out_dir"], f"worker-{i}.txt"), "w", encoding="utf-8") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
