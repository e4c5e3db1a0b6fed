"""The learning rate the checkup would suggest, once per study, before its first trial.

The script runs as written (no trial's values) until its first ``MAX_BATCHES`` training steps
have shown what the checkup needs: the model as it was before its first step (a copy), the
optimizer (its class and settings), the loss function (a ``torch.nn.functional`` loss, as the
monitor recognises them) and the training batches. The script is stopped there and the
checkup's ``learning_rate`` check (LR range test and largest stable LR, ``checks.training``)
runs on those. Every RNG is as it was before, so no trial's numbers change.
"""

from __future__ import annotations

import contextlib
import copy
import os
import runpy
import sys
import time
from typing import Any, Callable, Mapping

import torch
from torch.overrides import TorchFunctionMode

from trainmedic.checks.base import rng_kept
from trainmedic.quantities.activations import LOSS_NAMES, loss_name
from trainmedic.search.routes import OPTIMIZER_SETTINGS

MAX_BATCHES = 20        # the checkup's own default (``max_batches``)


class _Enough(BaseException):
    """Ends the script once the probe has what it needs (a BaseException, past ``except Exception``)."""


class _LossCalls(TorchFunctionMode):
    """Sees every ``torch.nn.functional`` loss call."""

    def __init__(self, on_loss: Callable[[Any, tuple, dict], None]) -> None:
        super().__init__()
        self.on_loss = on_loss

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if loss_name(func) is not None:
            self.on_loss(func, args, kwargs)
        return func(*args, **kwargs)


class _Capture:
    """What the script's first training steps show. A training forward is a call of a module with
    parameters, in training mode, with gradients on; the model is the first module called since
    the last step that holds parameters of the optimizer that steps; the training loss is the
    step's last loss call whose input needs a gradient (its function, extra arguments and
    keywords as in the first step; its target each step)."""

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None        # the copy, as before the first step
        self.optimizer: torch.optim.Optimizer | None = None
        self.loss: tuple[Any, tuple, dict] | None = None  # (function, extra args, kwargs)
        self.batches: list[tuple[Any, Any]] = []
        self.used: dict[str, Any] = {}                    # settings of the first step
        self.missing = ""                                 # why the probe found nothing
        self._root: torch.nn.Module | None = None
        self._forwards: dict[int, tuple[torch.nn.Module, Any]] = {}
        self._call: tuple[Any, Any, tuple, dict] | None = None   # (function, target, extra args, kwargs)

    def on_forward(self, module: torch.nn.Module, args: tuple) -> None:
        if args and module.training and torch.is_grad_enabled() and id(module) not in self._forwards \
                and next(module.parameters(), None) is not None:
            self._forwards[id(module)] = (module, args[0])

    def on_loss(self, func: Any, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("input")
        if torch.is_grad_enabled() and torch.is_tensor(x) and x.requires_grad:
            self._call = (func, args[1] if len(args) > 1 else kwargs.get("target"), args[2:],
                          {k: v for k, v in kwargs.items() if k not in ("input", "target")})

    def on_step(self, opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if self.optimizer is None:
            self._first_step(opt)
        elif opt is not self.optimizer:
            return
        seen = self._forwards.get(id(self._root))
        target = self._call[1] if self._call is not None else None
        if seen is not None and torch.is_tensor(target):
            self.batches.append((_detached(seen[1]), target.detach()))
        self._forwards, self._call = {}, None
        if len(self.batches) >= MAX_BATCHES:
            raise _Enough

    def _first_step(self, opt: torch.optim.Optimizer) -> None:
        mine = {id(p) for group in opt.param_groups for p in group["params"]}
        root = next((m for m, _ in self._forwards.values() if any(id(p) in mine for p in m.parameters())), None)
        if root is None or self._call is None:
            self.missing = ("no training forward of a torch module before the first optimizer step"
                            if root is None else
                            f"no torch.nn.functional loss ({', '.join(sorted(LOSS_NAMES))}) before the "
                            f"first optimizer step")
            raise _Enough
        self._root, self.optimizer = root, opt
        func, _, extra, kwargs = self._call
        self.loss = (func, extra, kwargs)
        self.model = copy.deepcopy(root)
        group = opt.param_groups[0]
        self.used = {k: _plain(group[k]) for k in OPTIMIZER_SETTINGS if k in group}
        x = self._forwards[id(root)][1]
        if torch.is_tensor(x) and x.dim():
            self.used["batch_size"] = len(x)


def _detached(x: Any) -> Any:
    return x.detach() if torch.is_tensor(x) else x


def _plain(v: Any) -> Any:
    """An optimizer setting as JSON holds it (a tensor lr as a float, betas as a list)."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return float(v) if torch.is_tensor(v) else v


def _run_until_captured(script: str, args: list[str], capture: _Capture, log_path: str) -> str:
    """Run ``script`` as ``python script args`` would until ``capture`` has enough; "" or how
    the script ended early (its exit code, its exception)."""
    from torch.nn.modules.module import register_module_forward_pre_hook
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path[:1] = [os.path.dirname(os.path.abspath(script))]
    handles = [register_module_forward_pre_hook(capture.on_forward),
               register_optimizer_step_pre_hook(capture.on_step)]
    ended = ""
    try:
        with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log), _LossCalls(capture.on_loss):
            runpy.run_path(script, run_name="__main__")
    except _Enough:
        pass
    except SystemExit as exc:
        ended = "" if exc.code in (None, 0) else f"the script exited with {exc.code!r}"
    except Exception as exc:  # noqa: BLE001 - the script's own crash: the trials will say more
        ended = f"the script crashed ({type(exc).__name__}: {exc})"
    finally:
        for h in handles:
            h.remove()
        sys.argv = saved_argv
        sys.path[:] = saved_path
    return ended


def check_lr(script: str, args: list[str], log_path: str) -> dict[str, Any]:
    """The checkup's LR suggestion for ``script`` as written: ``suggested`` with the two estimates
    it combines (``largest_stable``, ``min_over_10``), ``used`` (the lr and the other optimizer
    settings and batch size of its first step), ``batches`` and ``seconds``; or ``reason`` when
    it could not run. The script's output goes to ``log_path``."""
    from trainmedic.checkup import checkup
    started = time.perf_counter()
    capture = _Capture()
    with rng_kept():
        ended = _run_until_captured(script, args, capture, log_path)
        if not capture.batches:
            return {"reason": capture.missing or ended or (
                "the script never stepped an optimizer" if capture.model is None
                else "its training loss calls had no target tensor")}
        func, extra, kwargs = capture.loss

        def loss_fn(output: Any, target: Any) -> Any:
            return func(output, target, *extra, **kwargs)
        [result] = checkup(capture.model, capture.batches, loss_fn, optimizer=capture.optimizer,
                           checks=["learning_rate"]).run["checks"]
    if "suggested" not in result["details"]:
        return {"reason": f"the checkup's learning_rate check {result['status']}: {result['reason']}"}
    d = result["details"]
    return {"suggested": d["suggested"], "largest_stable": d["largest_stable"],
            "min_over_10": d["min_over_10"], "used": capture.used, "batches": len(capture.batches),
            "seconds": round(time.perf_counter() - started, 2)}


def advice(check: Mapping[str, Any], best: Mapping[str, Any] | None) -> str:
    """One sentence: the suggestion, with the script's values of the best trial's other tuned
    settings, beside the best trial's lr (the script's, when lr is not tuned)."""
    if "suggested" not in check:
        return f"The checkup's LR range test did not run: {check['reason']}."
    used, params, suggested = check["used"], (best or {}).get("params", {}), check["suggested"]
    conditions = ", ".join(f"{k}={_g(used[k])}" for k in params if k in used and k != "lr")
    lr, whose = (params["lr"], "the best trial used") if "lr" in params else (used["lr"], "the script's lr is")
    side = "above" if lr > suggested else "below"
    return (f"The checkup's LR range test suggests lr {suggested:.2g} (on the script as written"
            f"{': ' + conditions if conditions else ''}); {whose} {lr:.2g}, "
            f"{max(lr, suggested) / min(lr, suggested):.2g}x {side} it.")


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
