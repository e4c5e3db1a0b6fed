"""Search spaces: `--param NAME=KIND:SPEC` and Python dicts to Optuna distributions, samplers,
and the suggestions of a trial."""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

FORMS = {"log": "log:LOW:HIGH", "float": "float:LOW:HIGH[:STEP]", "int": "int:LOW:HIGH[:STEP]",
         "intlog": "intlog:LOW:HIGH", "choice": "choice:A,B,C"}
SAMPLERS = ("grid", "random", "tpe", "gp")
_INTEGER_KINDS = ("int", "intlog")
_CHOICE_TYPES = (type(None), bool, int, float, str)


def parse_param(text: str) -> tuple[str, BaseDistribution]:
    """`lr=log:1e-4:1` -> ("lr", FloatDistribution(1e-4, 1, log=True)); a ValueError names the bad part."""
    where = f"--param {text!r}"
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"{where}: expected NAME=KIND:SPEC, KIND one of {', '.join(FORMS.values())}")
    try:
        return name, _from_spec(spec)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def parse_space(texts: Iterable[str]) -> dict[str, BaseDistribution]:
    """Every `--param` of the command line; a name given twice is an error."""
    space: dict[str, BaseDistribution] = {}
    for text in texts:
        name, distribution = parse_param(text)
        if name in space:
            raise ValueError(f"--param {text!r}: {name!r} is given twice; expected each name once")
        space[name] = distribution
    return space


def space_from_dict(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The Python API's space: values are distributions, lists of choices, tuples like
    ("log", 1e-4, 1) or ("int", 1, 4, 1) or ("choice", "a", "b"), or strings like "log:1e-4:1"."""
    return {key: _entry(key, value) for key, value in space.items()}


def _entry(key: Any, value: Any) -> BaseDistribution:
    where = f"space[{key!r}] = {value!r}"
    try:
        if not isinstance(key, str) or not key:
            raise ValueError("expected a non-empty string as the name")
        if isinstance(value, BaseDistribution):
            return value
        if isinstance(value, str):
            return _from_spec(value)
        if isinstance(value, tuple) and value and isinstance(value[0], str) and value[0] in FORMS:
            kind, *args = value
            return _choice(args) if kind == "choice" else _range(kind, args)
        if isinstance(value, (list, tuple)):
            return _choice(list(value))
        raise ValueError("expected an optuna distribution, a list of choices, a tuple like "
                         "('log', 1e-4, 1) or a string like 'log:1e-4:1'")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _from_spec(spec: str) -> BaseDistribution:
    kind, _, rest = spec.strip().partition(":")
    if kind == "choice":
        return _choice(_typed([item.strip() for item in rest.split(",")]))
    if kind in FORMS:
        return _range(kind, rest.split(":"))
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(FORMS.values())}")


def _range(kind: str, parts: list[Any]) -> BaseDistribution:
    log = kind in ("log", "intlog")
    if len(parts) not in (2, 3) or (log and len(parts) == 3):
        raise ValueError(f"expected {FORMS[kind]}")
    integer = kind in _INTEGER_KINDS
    values = [_number(part, integer) for part in parts]
    if None in values:
        bad = parts[values.index(None)]
        raise ValueError(f"{FORMS[kind]} needs {'integers' if integer else 'finite numbers'}, got {bad!r}")
    low, high, step = (values + [None])[:3]
    floor = {"log": "0 < ", "intlog": "1 <= "}.get(kind, "")
    if not (low < high and (kind != "log" or low > 0) and (kind != "intlog" or low >= 1)):
        raise ValueError(f"{'an' if integer else 'a'} {kind} range needs {floor}LOW < HIGH")
    if step is not None and step <= 0:
        raise ValueError("a STEP needs 0 < STEP")
    if integer:
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(low, high, log=log, step=step)


def _number(value: Any, integer: bool) -> int | float | None:
    """The int (or finite float) that value is or spells, else None."""
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            return None
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return int(value) if integer else float(value)


def _typed(items: list[str]) -> list[Any]:
    """All ints -> int, else all finite numbers -> float, all true/false -> bool, else str."""
    for convert in (int, float):
        try:
            values = [convert(item) for item in items]
        except ValueError:
            continue
        if all(math.isfinite(v) for v in values):
            return values
    if all(item.lower() in ("true", "false") for item in items):
        return [item.lower() == "true" for item in items]
    return items


def _choice(values: list[Any]) -> CategoricalDistribution:
    if not all(isinstance(v, _CHOICE_TYPES) for v in values):
        raise ValueError("expected choices that are None, bool, int, float or str")
    if not values or "" in values:
        raise ValueError("expected choice:A,B,C with at least one choice and no empty one")
    if len(set(values)) != len(values):
        raise ValueError("expected distinct choices")
    return CategoricalDistribution(values)


def suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """The trial's values for every parameter of the space, through the public suggest_* API."""
    return {name: _suggest(trial, name, distribution) for name, distribution in space.items()}


def _suggest(trial: optuna.Trial, name: str, d: BaseDistribution) -> Any:
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    raise TypeError(f"parameter {name!r}: unsupported distribution {d!r}")


def grid_space(space: Mapping[str, BaseDistribution], grid_points: int = 5) -> dict[str, list[Any]]:
    """The grid's values per parameter: choices as they are; a range's every value when it has at most
    grid_points, else grid_points values evenly spaced (log-spaced on a log scale), without repeats."""
    if not isinstance(grid_points, int) or grid_points < 2:
        raise ValueError(f"grid_points {grid_points!r}: expected an integer >= 2")
    return {name: list(dict.fromkeys(_grid_values(d, grid_points))) for name, d in space.items()}


def grid_size(space: Mapping[str, BaseDistribution], grid_points: int = 5) -> int:
    """The number of cells of the grid, that is of trials a grid search runs."""
    return math.prod(len(values) for values in grid_space(space, grid_points).values())


def _grid_values(d: BaseDistribution, grid_points: int) -> list[Any]:
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if isinstance(d, IntDistribution) and d.log:
        if d.high - d.low < grid_points:
            return list(range(d.low, d.high + 1))
        return [int(round(v)) for v in np.geomspace(d.low, d.high, grid_points)]
    if isinstance(d, IntDistribution) or d.step is not None:
        cells = int(round((d.high - d.low) / d.step)) + 1
        picks = range(cells) if cells <= grid_points else np.linspace(0, cells - 1, grid_points).round()
        values = (d.low + int(i) * d.step for i in picks)
        return list(values) if isinstance(d, IntDistribution) else [_tidy(v) for v in values]
    spaced = np.geomspace if d.log else np.linspace
    return [_tidy(v) for v in spaced(d.low, d.high, grid_points)]


def _tidy(value: float) -> float:
    """0.0010000000000000002 -> 0.001: grid values as a person would write them."""
    return float(f"{value:.12g}")


def make_sampler(name: str, space: Mapping[str, BaseDistribution], seed: int | None = None,
                 grid_points: int = 5) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called `name` (grid, random, tpe or gp). Parallel workers should share the
    seed for grid (the same cell order) and use different seeds for the others (else they repeat)."""
    key = name.lower()
    if key == "grid":
        return optuna.samplers.GridSampler(grid_space(space, grid_points), seed=seed)
    if key == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if key == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if key == "gp":
        missing = [module for module in ("torch", "scipy") if importlib.util.find_spec(module) is None]
        if missing:
            raise ImportError(f"--sampler {name!r} needs {' and '.join(missing)}: pip install {' '.join(missing)}")
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"--sampler {name!r}: unknown sampler; expected one of {', '.join(SAMPLERS)}")
