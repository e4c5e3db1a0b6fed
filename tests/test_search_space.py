"""`--param` specs and Python dicts become Optuna distributions, bad ones a ValueError naming the
argument, the value and what was expected; samplers by name; the grid is searched cell by cell."""

import collections

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from trainmedic.search.space import (grid_size, grid_space, make_sampler, parse_param, parse_space, space_from_dict,
                                   suggest)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("text, name, expected", [
    ("lr=log:1e-4:1", "lr", FloatDistribution(1e-4, 1.0, log=True)),
    ("dropout=float:0:0.5", "dropout", FloatDistribution(0.0, 0.5)),
    ("dropout=float:0:0.5:0.1", "dropout", FloatDistribution(0.0, 0.5, step=0.1)),
    ("layers=int:1:4", "layers", IntDistribution(1, 4)),
    ("width=int:16:128:16", "width", IntDistribution(16, 128, step=16)),
    ("hidden=intlog:8:1024", "hidden", IntDistribution(8, 1024, log=True)),
    (" wd = log:1e-6:1e-2", "wd", FloatDistribution(1e-6, 1e-2, log=True)),
])
def test_parse_param_ranges(text, name, expected):
    assert parse_param(text) == (name, expected)


@pytest.mark.parametrize("spec, choices", [
    ("32,64,128", (32, 64, 128)),
    ("0.1, 1, 10", (0.1, 1.0, 10.0)),
    ("true,False", (True, False)),
    ("adam,sgd", ("adam", "sgd")),
    ("1,adam", ("1", "adam")),
    ("nan,1", ("nan", "1")),
])
def test_choices_are_typed(spec, choices):
    name, distribution = parse_param(f"x=choice:{spec}")
    assert distribution == CategoricalDistribution(choices)
    assert [type(c) for c in distribution.choices] == [type(c) for c in choices]


@pytest.mark.parametrize("text, expected", [
    ("lr=log:0:1", "a log range needs 0 < LOW < HIGH"),
    ("lr=log:1:0.1", "a log range needs 0 < LOW < HIGH"),
    ("lr=log:1e-4:1:0.1", "expected log:LOW:HIGH"),
    ("lr=foo:1:2", "unknown kind 'foo'; expected one of log:LOW:HIGH, float:LOW:HIGH[:STEP], int:LOW:HIGH[:STEP], "
                   "intlog:LOW:HIGH, choice:A,B,C"),
    ("lr", "expected NAME=KIND:SPEC"),
    ("=log:1:2", "expected NAME=KIND:SPEC"),
    ("x=int:1.5:3", "int:LOW:HIGH[:STEP] needs integers, got '1.5'"),
    ("x=int:3:1", "an int range needs LOW < HIGH"),
    ("x=intlog:0:8", "an intlog range needs 1 <= LOW < HIGH"),
    ("x=float:0:inf", "float:LOW:HIGH[:STEP] needs finite numbers, got 'inf'"),
    ("x=float:0:1:0", "a STEP needs 0 < STEP"),
    ("x=float:0", "expected float:LOW:HIGH[:STEP]"),
    ("x=choice:", "expected choice:A,B,C"),
    ("x=choice:a,,b", "expected choice:A,B,C"),
    ("x=choice:1,2,1", "expected distinct choices"),
])
def test_bad_param_names_argument_value_and_expectation(text, expected):
    with pytest.raises(ValueError) as error:
        parse_param(text)
    assert str(error.value).startswith(f"--param {text!r}: ")
    assert expected in str(error.value)


def test_parse_space_rejects_a_name_given_twice():
    assert list(parse_space(["lr=log:1e-4:1", "bs=choice:32,64"])) == ["lr", "bs"]
    with pytest.raises(ValueError, match=r"--param 'lr=float:0:1': 'lr' is given twice"):
        parse_space(["lr=log:1e-4:1", "lr=float:0:1"])


def test_space_from_dict_forms():
    given = FloatDistribution(0.0, 1.0)
    space = space_from_dict({"lr": ("log", 1e-4, 1), "layers": ("int", 1, 4), "width": ("int", 16, 64, 16),
                             "bs": [32, 64], "act": ("relu", "gelu"), "opt": ("choice", "adam", "sgd"),
                             "wd": "log:1e-6:1e-2", "p": given})
    assert space == {"lr": FloatDistribution(1e-4, 1.0, log=True), "layers": IntDistribution(1, 4),
                     "width": IntDistribution(16, 64, step=16), "bs": CategoricalDistribution([32, 64]),
                     "act": CategoricalDistribution(["relu", "gelu"]),
                     "opt": CategoricalDistribution(["adam", "sgd"]),
                     "wd": FloatDistribution(1e-6, 1e-2, log=True), "p": given}


@pytest.mark.parametrize("value, expected", [
    (("log", 0, 1), "a log range needs 0 < LOW < HIGH"),
    (("int", 1.5, 3), "int:LOW:HIGH[:STEP] needs integers, got 1.5"),
    (("float", True, 3), "needs finite numbers, got True"),
    ([], "expected choice:A,B,C"),
    ([[1], [2]], "expected choices that are None, bool, int, float or str"),
    (3, "expected an optuna distribution, a list of choices"),
    ("foo:1:2", "unknown kind 'foo'"),
])
def test_bad_dict_entry_names_key_value_and_expectation(value, expected):
    with pytest.raises(ValueError) as error:
        space_from_dict({"lr": value})
    assert str(error.value).startswith(f"space['lr'] = {value!r}: ")
    assert expected in str(error.value)


@pytest.mark.parametrize("name, cls", [("grid", optuna.samplers.GridSampler),
                                       ("random", optuna.samplers.RandomSampler),
                                       ("TPE", optuna.samplers.TPESampler),
                                       ("gp", optuna.samplers.GPSampler)])
def test_make_sampler(name, cls):
    assert type(make_sampler(name, parse_space(["lr=log:1e-4:1"]), seed=0)) is cls


def test_unknown_sampler_names_the_argument_and_the_known_ones():
    expected = r"^--sampler 'cmaes': unknown sampler; expected one of grid, random, tpe, gp$"
    with pytest.raises(ValueError, match=expected):
        make_sampler("cmaes", {})


def test_grid_values():
    space = parse_space(["lr=log:1e-4:1", "u=float:0:1", "q=float:0:1:0.25", "small=int:1:3", "big=int:0:100:10",
                         "h=intlog:1:1000", "bs=choice:32,64"])
    assert grid_space(space, 5) == {"lr": [1e-4, 1e-3, 1e-2, 0.1, 1.0], "u": [0.0, 0.25, 0.5, 0.75, 1.0],
                                    "q": [0.0, 0.25, 0.5, 0.75, 1.0], "small": [1, 2, 3],
                                    "big": [0, 20, 50, 80, 100], "h": [1, 6, 32, 178, 1000], "bs": [32, 64]}
    assert grid_size(space, 5) == 5 * 5 * 5 * 3 * 5 * 5 * 2
    assert grid_size(parse_space(["lr=log:1e-4:1"]), 3) == 3
    assert grid_space(parse_space(["h=intlog:1:6"]), 5) == {"h": [1, 2, 4, 6]}
    with pytest.raises(ValueError, match="grid_points 1: expected an integer >= 2"):
        grid_size(space, 1)


def test_grid_search_visits_every_cell_once_then_stops():
    space = parse_space(["lr=log:1e-3:1", "layers=int:1:2", "act=choice:relu,gelu"])
    study = optuna.create_study(sampler=make_sampler("grid", space, grid_points=3))
    study.optimize(lambda trial: suggest(trial, space)["lr"], n_trials=100)
    cells = collections.Counter(tuple(sorted(t.params.items())) for t in study.trials)
    assert len(study.trials) == grid_size(space, 3) == 12
    assert set(cells.values()) == {1}
    assert {lr for (_, _), (_, _), (_, lr) in cells} == {1e-3, 0.0316227766017, 1.0}


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp"])
def test_samplers_suggest_within_the_space(sampler):
    space = parse_space(["lr=log:1e-4:1", "layers=int:1:4:1", "drop=float:0:0.5:0.1", "bs=choice:32,64"])
    study = optuna.create_study(sampler=make_sampler(sampler, space, seed=0))
    seen = []
    study.optimize(lambda trial: seen.append(suggest(trial, space)) or seen[-1]["lr"], n_trials=12)
    assert len(seen) == 12 and all(t.state.name == "COMPLETE" for t in study.trials)
    for params in seen:
        assert 1e-4 <= params["lr"] <= 1 and params["layers"] in range(1, 5) and params["bs"] in (32, 64)
        assert round(params["drop"] * 10, 6) in range(6)
    assert study.trials[0].distributions == space
