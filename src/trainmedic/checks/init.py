"""Initialisation: symmetric weights, activation scale through depth, loss at init."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from trainmedic.checks.base import CheckContext, Skip, check
from trainmedic.findings import Finding

SCALE_DRIFT = 100.0     # activation std may change this much between the first and any later layer


def _param_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


@check("symmetric_weights", ["symmetric_weights"])
def check_symmetric_weights(ctx: CheckContext):
    """Identical rows of a non-zero constant, or several all-zero layers. A single all-zero
    layer is a deliberate technique (zero-initialised head, LoRA's B, residual branch) whose
    symmetry other layers break; the training monitor catches it if it persists."""
    constant, zero = [], []
    for name, m in _param_layers(ctx.model):
        w = m.weight.detach()
        if w.shape[0] < 2 or not m.weight.requires_grad:
            continue
        rows = w.reshape(w.shape[0], -1)
        if bool((rows == rows[:1]).all()):
            (constant if bool(w.any()) else zero).append(name + ".weight")
    bad = constant + (zero if len(zero) >= 2 else [])
    if bad:
        return [Finding.make("symmetric_weights",
                             f"All output units of {', '.join(bad[:6])} start with identical "
                             f"weights.", where=", ".join(bad[:3]), evidence={"parameters": bad})]
    return None


@check("bad_init_scale", ["bad_init_scale"])
def check_bad_init_scale(ctx: CheckContext):
    layers = _param_layers(ctx.model)
    if len(layers) < 3:
        raise Skip("fewer than 3 linear/conv layers")
    model = copy.deepcopy(ctx.model).eval()
    stds: dict[str, float] = {}
    names = {id(m): n for n, m in model.named_modules()}
    def record(mod, _args, out) -> None:
        stds.setdefault(names[id(mod)], float(out.float().std()))
    hooks = [m.register_forward_hook(record) for _, m in _param_layers(model)]
    try:
        with torch.no_grad():
            model(ctx.train_batches()[0][0])
    finally:
        for h in hooks:
            h.remove()
    order = list(stds)
    if len(order) < 3:
        raise Skip("fewer than 3 layers ran in the forward pass")
    first = stds[order[0]]
    lo = min(order[1:], key=stds.get)
    hi = max(order[1:], key=stds.get)
    last = stds[lo] if stds[lo] < first / SCALE_DRIFT else stds[hi]
    where = lo if stds[lo] < first / SCALE_DRIFT else hi
    ratio = last / max(first, 1e-30)
    gains = {}
    for name, m in _param_layers(ctx.model):
        fan_in = m.weight[0].numel()
        gains[name] = float(m.weight.detach().float().std() / math.sqrt(2.0 / fan_in))
    if ratio < 1 / SCALE_DRIFT or ratio > SCALE_DRIFT:
        direction = "collapses" if ratio < 1 else "explodes"
        return [Finding.make("bad_init_scale",
                             f"Activation scale {direction} with depth at initialisation: std "
                             f"{first:.3g} after {order[0]} but {last:.3g} after {where} "
                             f"({ratio:.3g}x). Weight std relative to He init ranges "
                             f"{min(gains.values()):.3g}x to {max(gains.values()):.3g}x.",
                             where=where,
                             evidence={"activation_std": stds, "weight_std_vs_he": gains})]
    return None


@check("loss_at_init_unexpected", ["loss_at_init_unexpected"], cheap=True)
def check_loss_at_init(ctx: CheckContext):
    task = ctx.task()
    if task == "classification":
        c = ctx.num_classes()
        expected, what = math.log(c), f"ln {c}"
    elif task == "binary":
        expected, what = math.log(2), "ln 2"
    else:
        raise Skip("no reference value for this loss")
    if ctx.loss_kwargs.get("reduction", "mean") != "mean":
        raise Skip("the loss is not averaged over samples (reduction != 'mean')")
    losses = ctx.initial_losses()
    observed = sum(losses) / len(losses)
    if observed > 1.5 * expected + 0.5 or observed < 0.3 * expected:
        return [Finding.make("loss_at_init_unexpected",
                             f"The loss at initialisation is {observed:.4g}; with balanced classes a "
                             f"fresh model starts near {what} = {expected:.4g}.",
                             evidence={"observed": observed, "expected": expected})]
    return None


def _values(w: torch.Tensor, dtype=torch.float32, limit: int = 1 << 16) -> torch.Tensor:
    """At most ``limit`` values of ``w`` (strided), on the host: statistics of a frozen 7B
    backbone must not copy it."""
    a = w.detach().reshape(-1)
    if a.numel() > limit:
        a = a[:: a.numel() // limit]
    return a.to("cpu", dtype)


def uniform_draw(w: torch.Tensor, bound: float) -> bool:
    """Values drawn from U(-bound, bound) and never moved: all inside the bound, std at
    bound/sqrt(3), and flat (a trained weight spreads past the bound and grows tails)."""
    a = _values(w)
    if a.numel() < 64:
        return False
    inside = float(a.abs().max()) <= bound * (1 + 1e-5)
    std = float(a.std())
    share = float((a.abs() <= bound / 2).float().mean())          # 0.5 for a uniform draw
    return inside and abs(std / (bound / math.sqrt(3)) - 1) < 0.1 and abs(share - 0.5) < 0.05


def truncated_normal_draw(w: torch.Tensor, std: float, cut: float) -> bool:
    """Values drawn from a normal cut at +-``cut`` whose std is ``std``, never moved: all inside
    the cut, the std within 10%."""
    a = _values(w)
    return (a.numel() >= 64 and float(a.abs().max()) <= cut * (1 + 1e-5)
            and abs(float(a.std()) / std - 1) < 0.1)


def _gaussian_default(w: torch.Tensor, fan_in: int, fan_out: int) -> bool:
    """Values drawn from N(0, s) with s one of the usual initialisation scales (1/sqrt(fan_in),
    He, Xavier, 0.02, 0.01, 1), with Gaussian tails; needs >= 1024 values."""
    a = _values(w, torch.float64)
    if a.numel() < 1024:
        return False
    std = float(a.std())
    scales = (1 / math.sqrt(fan_in), math.sqrt(2 / fan_in), math.sqrt(2 / (fan_in + fan_out)), 0.02, 0.01, 1.0)
    if not any(abs(std / s - 1) < 0.03 for s in scales):
        return False
    kurtosis = float(((a - a.mean()) ** 4).mean() / a.var() ** 2)
    return abs(float(a.mean())) < 4 * std / math.sqrt(a.numel()) and abs(kurtosis - 3) < 0.15


def looks_untrained(m: nn.Module) -> bool:
    """Whether a layer's weights still look like a fresh draw of a standard initialisation."""
    w = getattr(m, "weight", None)
    if isinstance(m, (nn.RNNBase,)):
        return all(uniform_draw(p, 1 / math.sqrt(m.hidden_size)) for n, p in m.named_parameters()
                   if n.startswith("weight"))
    if not isinstance(w, torch.Tensor) or w.dim() < 2:
        return False
    fan_in = w[0].numel()
    fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
    if isinstance(m, nn.Embedding):
        return _gaussian_default(w, fan_in, fan_out)
    return uniform_draw(w, 1 / math.sqrt(fan_in)) or _gaussian_default(w, fan_in, fan_out)


def frozen_random_finding(models: "list[nn.Module]") -> "list[Finding] | None":
    """Layers frozen (``requires_grad=False``) whose weights still look like a fresh random
    initialisation, in a model where other parameters train: only what follows them learns."""
    frozen, trainable = [], 0
    for model in models:
        trainable += sum(p.numel() for p in model.parameters() if p.requires_grad)
        for name, m in model.named_modules():
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own) and looks_untrained(m):
                frozen.append((name or type(model).__name__, sum(p.numel() for p in own)))
    return frozen_finding(frozen, trainable)


def frozen_finding(frozen: "list[tuple[str, int]]", trainable: int,
                   how: str = "requires_grad=False") -> "list[Finding] | None":
    """``frozen_random_layers`` for these (layer name, values) frozen at a random draw, when
    ``trainable`` values of the model still learn."""
    if not frozen or not trainable:
        return None
    names = [n for n, _ in frozen]
    values = sum(k for _, k in frozen)
    return [Finding.make(
        "frozen_random_layers",
        f"{len(frozen)} layers are frozen ({how}) with weights that still look like a "
        f"fresh random initialisation ({values} values): {', '.join(names[:6])}"
        + (f" and {len(names) - 6} more" if len(names) > 6 else "") + ". They compute random "
        f"features; only the {trainable} trainable values after them learn.",
        where=", ".join(names[:3]), evidence={"layers": names, "frozen_values": values,
                                              "trainable_values": trainable})]
