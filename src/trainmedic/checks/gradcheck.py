"""Gradient checks for custom autograd Functions: their backward against finite differences
in float64 (torch.autograd.gradcheck), on small slices of the inputs seen in a forward pass."""

from __future__ import annotations

import copy

import torch
from torch.autograd import Function

from trainmedic.checks.base import CheckContext, Skip, check
from trainmedic.findings import Finding

MAX_NUMEL = 2048


def _record_functions(ctx: CheckContext) -> dict[type, tuple]:
    """Custom Function classes applied in one forward pass, with the first arguments seen."""
    seen: dict[type, tuple] = {}
    original = Function.__dict__["apply"]

    def recording(cls, *args, **kwargs):
        if not cls.__module__.startswith("torch."):
            seen.setdefault(cls, args)
        return original.__func__(cls, *args, **kwargs)
    Function.apply = classmethod(recording)
    try:
        model = copy.deepcopy(ctx.model).eval()
        with torch.no_grad():
            model(ctx.train_batches()[0][0])
    finally:
        Function.apply = original
    return seen


def _small(arg, batch: int):
    if not torch.is_tensor(arg):
        return arg
    t = arg.detach()
    if t.dim() and t.shape[0] == batch and batch > 2:
        t = t[:2]
    if t.is_floating_point():
        return t.double().clone().requires_grad_(True)
    return t.clone()


def _relative_errors(cls, inputs) -> list[float]:
    """Per differentiable input: max |analytic - numeric| / max(|numeric|, 1e-6) along a random
    output direction."""
    out = cls.apply(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(0)
    dirs = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]

    def f(*xs):
        res = cls.apply(*xs)
        res = res if isinstance(res, tuple) else (res,)
        return sum((r * d).sum() for r, d in zip(res, dirs))
    diff = [x for x in inputs if torch.is_tensor(x) and x.requires_grad]
    analytic = torch.autograd.grad(f(*inputs), diff, allow_unused=True)
    errors = []
    for x, a in zip(diff, analytic):
        num = torch.zeros_like(x)
        flat, nflat = x.detach().view(-1), num.view(-1)
        for i in range(flat.numel()):
            keep = flat[i].item()
            flat[i] = keep + 1e-6
            up = f(*inputs).item()
            flat[i] = keep - 1e-6
            down = f(*inputs).item()
            flat[i] = keep
            nflat[i] = (up - down) / 2e-6
        a = torch.zeros_like(x) if a is None else a
        errors.append(float((a - num).abs().max() / num.abs().max().clamp_min(1e-6)))
    return errors


@check("gradient_check", ["gradient_check_failed"])
def check_gradients(ctx: CheckContext):
    x = ctx.train_batches()[0][0]
    found = _record_functions(ctx)
    if not found:
        raise Skip("the model uses no custom autograd Function")
    batch = len(x) if torch.is_tensor(x) else -1
    findings, details = [], {}
    for cls, args in found.items():
        inputs = tuple(_small(a, batch) for a in args)
        numel = sum(a.numel() for a in inputs if torch.is_tensor(a) and a.is_floating_point())
        if numel > MAX_NUMEL:
            details[cls.__name__] = f"skipped: {numel} input values (limit {MAX_NUMEL})"
            continue
        ok = torch.autograd.gradcheck(lambda *a: cls.apply(*a), inputs, eps=1e-6, atol=1e-5,
                                      rtol=1e-3, raise_exception=False)
        errors = _relative_errors(cls, inputs)
        details[cls.__name__] = {"passed": bool(ok), "max_relative_error": errors}
        if not ok:
            findings.append(Finding.make(
                "gradient_check_failed",
                f"The backward of {cls.__qualname__} disagrees with finite differences: max relative "
                f"error per input {', '.join(f'{e:.3g}' for e in errors)}.", where=cls.__qualname__,
                evidence={"function": cls.__qualname__, "max_relative_error": errors}))
    ctx.details["gradient_check"] = details
    return findings
