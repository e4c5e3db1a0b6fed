"""``trainmedic.tune(train_fn, space)``: an Optuna study over a training function.

``train_fn(params)`` (or ``train_fn(params, trial)``) trains with the values in ``params`` and
returns the value to optimise. Every monitor the function builds while it runs
(``trainmedic.watch``) joins the trial: an error finding of the training dynamics stops it
(pruned by diagnosis) and each validation epoch's ``metric`` goes to Optuna's pruner.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import optuna

from trainmedic import run_metric
from trainmedic.monitor import StopTraining, attached
from trainmedic.search.space import make_sampler, space_from_dict, suggest
from trainmedic.search.storage import open_storage
from trainmedic.search.study import DIRECTIONS, make_pruner
from trainmedic.search.trial import PRUNE_ON, TrialControl


def tune(train_fn: Callable[..., float], space: Mapping[str, Any], n_trials: int = 40, *,
         direction: str | None = None, metric: str | None = None, sampler: str = "tpe",
         seed: int | None = None, grid_points: int = 5, storage: str | None = None,
         study_name: str | None = None, pruner: str = "median", diagnosis: bool = True,
         catch: tuple[type[Exception], ...] = ()) -> optuna.Study:
    """Optimise ``train_fn`` over ``space`` (see ``space.space_from_dict``); returns the study.
    ``metric``: the validation metric reported to the pruner per epoch (default ``val_acc``
    when maximising, ``val_loss`` when minimising); ``direction``: ``maximize`` or
    ``minimize`` (default: minimise losses and errors, maximise the rest; ``maximize`` without
    a metric). ``storage``: an Optuna storage URL (default: in memory). ``catch``: exceptions
    of ``train_fn`` that fail one trial, not the study."""
    if not callable(train_fn):
        raise TypeError(f"train_fn={train_fn!r} is not callable")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r}: expected an integer >= 1")
    if direction is None:
        direction = "maximize" if metric is None or run_metric.maximized(metric) else "minimize"
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}: expected one of {', '.join(DIRECTIONS)}")
    dists = space_from_dict(space)
    metric = metric or ("val_acc" if direction == "maximize" else "val_loss")
    required = [p for p in inspect.signature(train_fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    wants_trial = len(required) >= 2
    study = optuna.create_study(
        storage=open_storage(storage, "") if storage else None, study_name=study_name,
        sampler=make_sampler(sampler, dists, seed, grid_points), pruner=make_pruner(pruner),
        direction=direction, load_if_exists=study_name is not None)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, dists)
        monitors: list[Any] = []

        def join(monitor: Any) -> None:
            monitor.add_control(TrialControl(trial, metric, diagnosis))
            if diagnosis:
                monitor.stop_on |= set(PRUNE_ON)
            monitors.append(monitor)
        status = "crashed"
        try:
            with attached(join):
                value = train_fn(params, trial) if wants_trial else train_fn(params)
            status = "completed"
        except StopTraining as stop:
            status = "stopped"
            trial.set_user_attr("pruned_by", stop.reason)
            raise optuna.TrialPruned(trial.user_attrs.get("pruned_reason", stop.reason)) from None
        finally:
            for m in monitors:                  # those the function left open
                m.close(status)
            trial.set_user_attr("steps", sum(m.step for m in monitors))
            trial.set_user_attr("findings", sorted({f for m in monitors for f in m.findings}))
        return value

    study.optimize(objective, n_trials=n_trials, catch=catch)
    return study
