"""Wiring: every parameter trains, the loss gets what it expects, samples do not mix, the
model is deterministic in eval mode. Every check works on a deep copy of the model."""

from __future__ import annotations

import copy

import torch
from torch import nn

from trainmedic.checks.base import CheckContext, Skip, check
from trainmedic.findings import Finding
from trainmedic.quantities.activations import ActivationSampler, main_tensor
from trainmedic._safety import Guard


def _names(ids: set[int], model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if id(p) in ids]


@check("params_not_in_optimizer", ["params_not_in_optimizer"])
def check_params_not_in_optimizer(ctx: CheckContext):
    if ctx.optimizer is None:
        raise Skip("no optimizer given")
    owned = {id(p) for g in ctx.optimizer.param_groups for p in g["params"]}
    missing = {id(p) for p in ctx.model.parameters() if p.requires_grad and id(p) not in owned}
    if missing:
        names = _names(missing, ctx.model)
        return [Finding.make("params_not_in_optimizer",
                             f"{len(names)} trainable parameter tensors are in no optimizer param "
                             f"group: {', '.join(names[:8])}.", where=", ".join(names[:3]),
                             evidence={"parameters": names})]
    return None


@check("params_without_gradient", ["params_not_updating"])
def check_params_without_gradient(ctx: CheckContext):
    x, y = ctx.train_batches()[0]
    model = copy.deepcopy(ctx.model).train()
    loss = ctx.loss_fn(model(x), y)
    loss.backward()
    none = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if none:
        return [Finding.make("params_not_updating",
                             f"{len(none)} trainable parameter tensors get no gradient from the loss "
                             f"(unused, or the graph is cut by .detach()/.data/.item()/numpy): "
                             f"{', '.join(none[:8])}.", severity="warning", where=", ".join(none[:3]),
                             evidence={"parameters": none})]
    return None


@check("loss_input_mismatch", ["loss_input_mismatch"])
def check_loss_input_mismatch(ctx: CheckContext):
    x, y = ctx.train_batches()[0]
    model = copy.deepcopy(ctx.model).train()
    sampler = ActivationSampler(Guard())
    sampler.name_modules(model)
    sampler.begin(model)
    try:
        out = model(x)
        sampler.forward_done(out)
        with torch.no_grad():
            ctx.loss_fn(out, y)
    finally:
        sampler.end()
    _, _, issues = sampler.take()
    findings = [Finding.make("loss_input_mismatch", e["message"][0].upper() + e["message"][1:] + ".",
                             where=name, evidence={"loss": name, "input_shape": e["shape"]})
                for name, e in issues.items() if e["hits"]]
    if ctx.task() == "regression" and torch.is_tensor(y) and not y.is_floating_point():
        findings.append(Finding.make(
            "loss_input_mismatch", f"Integer targets (class indices? values {sorted(set(y.reshape(-1).tolist()))[:10]}) "
            f"go into a regression loss; use CrossEntropyLoss with one output per class.",
            where="targets", evidence={"dtype": str(y.dtype)}))
    return findings


@check("batch_mixing", ["batch_mixing"])
def check_batch_mixing(ctx: CheckContext):
    x, _ = ctx.train_batches()[0]
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise Skip("inputs are not floating-point tensors")
    if len(x) < 2:
        raise Skip("batch of one sample")
    model = copy.deepcopy(ctx.model).eval()       # eval: BatchNorm uses running statistics
    xin = x[:8].detach().clone().requires_grad_(True)
    out = main_tensor(model(xin))
    if out is None or out.shape[0] != len(xin):
        raise Skip("the output's first dimension is not the batch")
    out[0].sum().backward()
    g = xin.grad.reshape(len(xin), -1).abs().amax(1)
    leak = g[1:].max() / g[0].clamp_min(1e-30)
    if g[0] > 0 and leak > 1e-6:
        return [Finding.make("batch_mixing",
                             f"The output for sample 0 depends on other samples of the batch: "
                             f"|d out[0] / d x[j]| reaches {float(leak):.3g} of |d out[0] / d x[0]| "
                             f"(model in eval mode).", where="model",
                             evidence={"relative_leak": float(leak),
                                       "per_sample_gradient": g.tolist()})]
    return None


@check("eval_in_train_mode", ["eval_in_train_mode"])
def check_eval_determinism(ctx: CheckContext):
    x, _ = ctx.train_batches()[0]
    model = copy.deepcopy(ctx.model).eval()
    with torch.no_grad():
        a, b = main_tensor(model(x)), main_tensor(model(x))
    if a is None:
        raise Skip("the model's output holds no floating tensor")
    if not torch.equal(a, b):
        stochastic = [n for n, m in model.named_modules() if m.training]
        return [Finding.make("eval_in_train_mode",
                             "Two evaluation passes over the same batch in eval mode give different "
                             "outputs (max difference "
                             f"{float((a - b).abs().max()):.3g}): something stays random at evaluation, "
                             "e.g. F.dropout(x, p) without training=self.training"
                             + (f", or modules left in training mode: {', '.join(stochastic[:5])}" if stochastic else "")
                             + ".", where="model",
                             evidence={"max_difference": float((a - b).abs().max())})]
    return None
