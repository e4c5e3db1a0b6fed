"""``trainmedic.checkup``: the troubleshooting guide's "before you troubleshoot" list and the
methodology chapter's debugging strategies as one call.

    report = trainmedic.checkup(model, train_loader, loss_fn, optimizer=opt, val_loader=val_loader)

Every check works on copies inside a snapshot-and-restore guard: the model's parameters,
buffers, gradients and modes, the optimizer's state and all RNG states are as they were.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import torch

from trainmedic.checks import REGISTRY, CheckContext, CheckResult, Skip, preserved
from trainmedic.checks.base import split_batch
from trainmedic.findings import Report


def checkup(model: torch.nn.Module, train_loader: Iterable | None = None,
            loss_fn: Callable[[Any, Any], torch.Tensor] | None = None, *,
            optimizer: torch.optim.Optimizer | None = None, val_loader: Iterable | None = None,
            checks: Iterable[str] | None = None, skip: Iterable[str] = (),
            batch_fn: Callable[[Any], tuple[Any, Any]] | None = None, max_batches: int = 20,
            on_result: Callable[[CheckResult], None] | None = None) -> Report:
    """Run the named checks (default: all) and return a Report whose ``run["checks"]`` lists
    each check with status passed/failed/skipped/error, its reason and its time."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model={model!r} is not a torch.nn.Module")
    if loss_fn is None or not callable(loss_fn):
        raise TypeError(f"loss_fn={loss_fn!r} is not callable; expected e.g. nn.CrossEntropyLoss()")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer={optimizer!r} is not a torch.optim.Optimizer")
    names = list(REGISTRY) if checks is None else list(checks)
    unknown = [n for n in [*names, *skip] if n not in REGISTRY]
    if unknown:
        raise ValueError(f"checks={unknown!r} are not known checks; expected names from {sorted(REGISTRY)}")
    names = [n for n in names if n not in set(skip)]
    ctx = CheckContext(model=model, loss_fn=loss_fn, train_loader=train_loader, optimizer=optimizer,
                       val_loader=val_loader, batch_fn=batch_fn or split_batch, max_batches=max_batches)
    results: list[CheckResult] = []
    started = time.time()
    with preserved(model, optimizer, [train_loader, val_loader]):
        for name in names:
            torch.manual_seed(0)
            results.append(run_check(name, ctx))
            if on_result is not None:
                on_result(results[-1])
    findings = [f for r in results for f in r.findings]
    return Report(findings=findings, run={
        "name": "checkup", "status": "completed", "duration_s": round(time.time() - started, 3),
        "torch": torch.__version__, "models": [type(model).__name__],
        "optimizers": [type(optimizer).__name__] if optimizer is not None else [],
        "checks": [r.to_dict() for r in results]})


def run_check(name: str, ctx: CheckContext) -> CheckResult:
    """One check, timed; a Skip or an internal error never escapes."""
    spec = REGISTRY[name]
    start = time.perf_counter()
    try:
        findings = spec.fn(ctx) or []
        status, reason = ("failed" if findings else "passed"), ""
    except Skip as s:
        findings, status, reason = [], "skipped", str(s)
    except Exception as exc:  # noqa: BLE001 - a broken check must not stop the battery
        findings, status, reason = [], "error", f"{type(exc).__name__}: {exc}"
    return CheckResult(name, status, time.perf_counter() - start, reason, findings,
                       ctx.details.pop(name, {}))


FACTORY_KEYS = ("model", "loss_fn", "train_loader", "optimizer", "val_loader", "batch_fn")


def load_factory(target: str) -> dict[str, Any]:
    """Import ``module:function`` or ``path/to/file.py:function``, call it, and return the
    checkup arguments from the dict it returns (see FACTORY_KEYS)."""
    import importlib
    import importlib.util
    import os
    import sys

    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"target={target!r} is not 'module:function' or 'file.py:function'")
    if module_name.endswith(".py") or os.sep in module_name:
        if not os.path.isfile(module_name):
            raise FileNotFoundError(f"target={target!r}: {module_name} does not exist")
        spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(module_name))[0], module_name)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(os.path.abspath(module_name)))
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    parts = getattr(module, func_name)()
    if not isinstance(parts, dict):
        raise TypeError(f"{target} returned {type(parts).__name__}; expected a dict with keys "
                        f"{', '.join(FACTORY_KEYS)} (model, loss_fn and train_loader required)")
    extra = set(parts) - set(FACTORY_KEYS)
    missing = {"model", "loss_fn", "train_loader"} - set(parts)
    if extra or missing:
        raise ValueError(f"{target} returned keys {sorted(parts)}; "
                         + (f"unknown: {sorted(extra)}; " if extra else "")
                         + (f"missing: {sorted(missing)}; " if missing else "")
                         + f"expected {', '.join(FACTORY_KEYS)}")
    return parts
