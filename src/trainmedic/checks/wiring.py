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


MAX_PROBE_PARAMETERS = 100_000_000    # the probes copy the model; bigger models are skipped


def quiet_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode without the hooks the original carries (a
    monitor's hooks must not see the probe's forward)."""
    try:
        twin = copy.deepcopy(model).eval()
    except Exception as exc:  # noqa: BLE001 - e.g. a non-leaf tensor kept as an attribute
        raise Skip(f"the model cannot be copied ({type(exc).__name__})") from None
    for m in twin.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
    return twin


def batch_mixing_finding(model: nn.Module, x: torch.Tensor) -> "list[Finding] | None":
    """Does sample i's output depend on the other samples of its batch? On an eval-mode copy
    (BatchNorm uses running statistics), the output of a middle sample i is compared with the
    output after every other sample is mirrored (its non-batch axes reversed), in both
    directions: samples before and after i. Works for float and integer (token) inputs."""
    if not torch.is_tensor(x) or x.dim() == 0 or len(x) < 3:
        raise Skip("needs a tensor batch of at least 3 samples")
    if sum(p.numel() for p in model.parameters()) > MAX_PROBE_PARAMETERS:
        raise Skip("model too large to copy for the probe")
    twin = quiet_copy(model)
    x = x[:16].detach()
    n, i = len(x), len(x) // 2
    others = [j for j in range(n) if j != i]
    changed = x.clone()
    changed[others] = x[others].flip(tuple(range(1, x.dim())))   # mirrored / reversed samples
    if torch.equal(changed, x):
        changed[others] = x[others].roll(1, 0)                  # ... or each other's content
    if torch.equal(changed, x):
        raise Skip("the samples of the batch are all the same")
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):      # the user's generators are left as they were
        states = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]

        def forward(inputs):         # the same random numbers for each call (a VAE samples)
            torch.set_rng_state(states[0])
            for d, st in zip(devices, states[1]):
                torch.cuda.set_rng_state(st, d)
            return main_tensor(twin(inputs))
        try:
            with torch.no_grad():
                a, b = forward(x), forward(changed)
        except Exception as exc:  # noqa: BLE001 - the model needs more than the batch (t, mask, ...)
            raise Skip(f"the model cannot be called with the batch alone ({type(exc).__name__})") from None
    if a is None or a.dim() == 0 or a.shape[0] != n or b is None or b.shape != a.shape:
        raise Skip("the output's first dimension is not the batch")
    scale = float(a[i].float().abs().max()) + 1e-12
    diff = float((a[i].float() - b[i].float()).abs().max())
    if diff > 1e-4 * scale:
        return [Finding.make("batch_mixing",
                             f"The output for sample {i} of a batch of {n} changes by {diff:.3g} "
                             f"(its scale is {scale:.3g}) when the other samples are "
                             f"changed, with the model in eval mode: samples mix within a batch.",
                             where="model", evidence={"relative_change": diff / scale, "sample": i,
                                                      "batch": n})]
    return None


@check("batch_mixing", ["batch_mixing"])
def check_batch_mixing(ctx: CheckContext):
    x, _ = ctx.train_batches()[0]
    return batch_mixing_finding(ctx.model, x)


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
