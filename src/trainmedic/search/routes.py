"""How a trial's values reach an unmodified script, in this order:

1. its own argparse flag, when the script declares one whose ``dest`` is the parameter's name
   (the parsed namespace gets the value, whatever the command line said);
2. the optimizer's constructor, for an optimizer setting (``lr``, ``weight_decay``, ``momentum``,
   ``betas``...): the value replaces the setting in every parameter group of every optimizer the
   script builds (schedulers built afterwards start from it);
3. the DataLoader, for ``batch_size`` (every loader built without a ``batch_sampler``).

``plan`` decides each parameter's route from the script's source before any trial runs;
``Routes`` applies them while the script runs and records what each one reached.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
from typing import Any, Iterable, Mapping

from trainmedic._patches import in_own_work

OPTIMIZER_SETTINGS = ("lr", "weight_decay", "momentum", "dampening", "nesterov", "betas", "eps",
                      "alpha", "rho", "lr_decay", "amsgrad", "centered")
LOADER_SETTINGS = ("batch_size",)


def script_flags(source: str) -> dict[str, str]:
    """The argparse options the script declares: ``dest`` -> option string (``--lr``)."""
    flags: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        opts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        dest = next((k.value.value for k in node.keywords if k.arg == "dest"
                     and isinstance(k.value, ast.Constant)), None)
        longs = [o for o in opts if o.startswith("--")] or [o for o in opts if o.startswith("-")]
        if dest is None and longs:
            dest = longs[0].lstrip("-").replace("-", "_")
        elif dest is None and opts:
            dest = opts[0]                                  # a positional argument
        if dest is not None:
            flags[dest] = longs[0] if longs else dest
    return flags


def plan(names: Iterable[str], source: str) -> dict[str, str]:
    """Each parameter's route: ``argparse``, ``optimizer`` or ``DataLoader``. A parameter no
    route reaches raises ValueError naming it and what would have been accepted."""
    flags = script_flags(source)
    out: dict[str, str] = {}
    for name in names:
        if name in flags:
            out[name] = "argparse"
        elif name in OPTIMIZER_SETTINGS:
            out[name] = "optimizer"
        elif name in LOADER_SETTINGS:
            out[name] = "DataLoader"
        else:
            known = ", ".join(f"--{d}" if not f.startswith("-") else f for d, f in sorted(flags.items()))
            raise ValueError(
                f"--param {name}: no route reaches it: expected one of the script's argparse flags "
                f"({known or 'it declares none'}), an optimizer setting ({', '.join(OPTIMIZER_SETTINGS)}) "
                f"or batch_size (the DataLoader's)")
    return out


class Routes:
    """While active, hands ``values`` to the script by their planned routes; ``taken`` says
    where each one landed (e.g. ``--lr``, ``SGD(lr)``, ``DataLoader(batch_size)``)."""

    def __init__(self, values: Mapping[str, Any], routes: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.routes = dict(routes)
        self.taken: dict[str, str] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    def by(self, route: str) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if self.routes.get(k) == route}

    def __enter__(self) -> "Routes":
        import torch
        from torch.utils.data import DataLoader
        if self.by("argparse"):
            self._patch(argparse.ArgumentParser, "parse_known_args", self._parse_known_args)
        if self.by("optimizer"):
            self._patch(torch.optim.Optimizer, "__init__", self._optimizer_init)
        if self.by("DataLoader"):
            self._patch(DataLoader, "__init__", self._loader_init)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved = []

    def missing(self) -> list[str]:
        """Parameters that reached nothing during the run."""
        return [k for k in self.values if k not in self.taken]

    def _patch(self, owner: Any, name: str, make: Any) -> None:
        original = owner.__dict__[name]
        self._saved.append((owner, name, original))
        setattr(owner, name, functools.wraps(original)(make(original)))

    def _parse_known_args(self, original: Any) -> Any:
        routes = self

        def parse_known_args(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
            ns, extras = original(parser, *args, **kwargs)
            for action in parser._actions:
                if action.dest in routes.by("argparse"):
                    setattr(ns, action.dest, routes.values[action.dest])
                    routes.taken[action.dest] = (action.option_strings or [action.dest])[-1]
            return ns, extras
        return parse_known_args

    def _optimizer_init(self, original: Any) -> Any:
        routes = self

        def __init__(opt: Any, params: Any, defaults: dict, *args: Any, **kwargs: Any) -> None:
            if in_own_work():                   # trainmedic's probes keep their own settings
                return original(opt, params, defaults, *args, **kwargs)
            settings = {k: v for k, v in routes.by("optimizer").items() if k in defaults}
            original(opt, params, {**defaults, **settings}, *args, **kwargs)
            for group in opt.param_groups:
                group.update(settings)
            for k in settings:
                routes.taken[k] = f"{type(opt).__name__}({k})"
        return __init__

    def _loader_init(self, original: Any) -> Any:
        routes = self
        signature = inspect.signature(original)

        def __init__(loader: Any, *args: Any, **kwargs: Any) -> None:
            try:
                bound = signature.bind(loader, *args, **kwargs)
            except TypeError:                       # not DataLoader's own signature: leave it
                return original(loader, *args, **kwargs)
            if bound.arguments.get("batch_sampler") is None:
                bound.arguments["batch_size"] = routes.values["batch_size"]
                routes.taken["batch_size"] = "DataLoader(batch_size)"
            original(*bound.args, **bound.kwargs)
        return __init__
