"""Re-initialisation by activation: each Linear/Conv layer gets the scheme that suits the
activation its output feeds, RNNs get orthogonal recurrent weights, and the last layer of each
residual branch starts at zero; with a report of the activation scale through depth.

    from trainmedic import initialize
    print(initialize.activation_scale(model, x))     # std / RMS of each layer's output, in forward order
    result = initialize.reinit(model, sample=x)      # He / Xavier / LeCun / orthogonal, per layer
    print(result)                                     # scheme per layer; the scale before and after
    initialize.reinit(model, overrides={"head": "zero", "encoder.*": "keep"},
                      generator=torch.Generator().manual_seed(0))

What a layer feeds is found by tracing one forward of ``sample`` (a tensor: ``model(sample)``; a
tuple: ``model(*sample)``; a dict: ``model(**sample)``) under a torch-function mode: each layer's
output is followed through ops that keep its values' meaning (norms, dropout, reshapes, pooling,
bias adds, concatenation) to the first activation, module (``nn.ReLU`` calls ``F.relu``) or
functional (``F.gelu``, ``torch.tanh``, ``x.relu()``, ...). A layer whose output reaches no
activation (the output layer, a linear bottleneck) is "linear". Without a sample, the first
activation module registered after each layer (before the next layer) is taken; a model that
registers no activation module is guessed to be ReLU throughout. The traced forward runs under
``no_grad`` in the model's current mode and leaves the model and torch's RNG as they were
(buffers such as BatchNorm running statistics are put back).

Schemes (weights; biases are set to zero):

- ``"he"``: ReLU, leaky ReLU (gain from its slope), PReLU, GELU, SiLU, Mish, ELU, CELU, Softplus,
  Hardswish: normal, std = gain / sqrt(fan_in) (kaiming normal, fan-in).
- ``"xavier"``: tanh (gain 5/3), sigmoid, hardtanh, softsign (gain 1): Glorot normal,
  std = gain * sqrt(2 / (fan_in + fan_out)), gains from ``torch.nn.init.calculate_gain``.
- ``"lecun"``: SELU, and linear layers (no activation): normal, std = 1 / sqrt(fan_in). LeCun
  rather than Xavier for linear layers: it keeps the output's scale equal to the input's
  whatever the fan-out, which is what a layer feeding no nonlinearity needs.
- ``"orthogonal"``: the default for RNN/LSTM/GRU (and their cells): each gate block of
  ``weight_hh`` orthogonal, each gate block of ``weight_ih`` (and an LSTM projection) Glorot
  normal, biases zero except the LSTM forget gate's ``bias_ih`` block, set to
  ``lstm_forget_bias`` (1 by default, as Jozefowicz et al. 2015 recommend, so the cell remembers
  from the start). On a Linear/Conv layer: ``torch.nn.init.orthogonal_`` with the activation's gain.
- ``"zero"``: weights and biases zero. ``"keep"``: leave the layer as it is.

Residual branches (``zero_residual=True``, with a sample): an add of two tensors of the same
shape where one (the skip) is the block's input, the other was computed from it through layers
(the branch), or where both come from one tensor, the skip through at most one layer (a
downsample) and the branch through more, each as a plain chain. The last Linear/Conv/norm layer
of the branch is zeroed (a norm layer's weight, gamma, set to 0, as torchvision's
``zero_init_residual`` does; a ``nn.MultiheadAttention``'s ``out_proj``), so each residual block
starts as the identity and the signal's scale does not grow with depth. Its weights still get
gradients (their input is not zero), so the block learns from the first step.

Parameters with ``requires_grad=False`` are left alone unless ``include_frozen=True``;
uninitialised (lazy) parameters are skipped (a traced forward materialises lazy layers, as any
forward does). Overrides (``{"name glob": scheme}``, matched with fnmatch on module names, the
first matching glob wins) take precedence over the chosen scheme and over residual zeroing.
Random draws are made on the CPU from ``generator`` (a CPU ``torch.Generator``) or, without one,
from torch's global RNG, then copied to the parameter's device: the same seed gives the same
weights on any device.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from trainmedic._samples import call_with, cuda_devices, tensors_in

SCHEMES = ("he", "xavier", "lecun", "orthogonal", "zero", "keep")

LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase, nn.RNNCellBase)
NORMS = tuple(c for c in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                          getattr(nn, "RMSNorm", None)) if c is not None)

_HE = {"relu", "leaky_relu", "gelu", "silu", "mish", "hardswish", "elu", "celu", "softplus"}
_XAVIER = {"tanh", "sigmoid", "hardtanh", "softsign"}
_LECUN = {"selu", "linear"}
_ZERO_AT_ZERO = _HE - {"softplus"} | {"tanh", "hardtanh", "softsign", "selu"}   # f(0) = 0
# |pre-activation| beyond which the derivative is under ~7 % of its maximum.
_SATURATES_AT = {"tanh": 2.0, "sigmoid": 4.0, "hardtanh": 1.0}
_GATES = {"LSTM": 4, "LSTMCell": 4, "GRU": 3, "GRUCell": 3}


# -- results ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerInit:
    """One layer's initialisation: ``activation`` is what its output feeds ("linear" for none;
    ``slope`` for leaky ReLU / PReLU), ``found_by`` how that was found ("trace",
    "registration", "guess"; "-" for an RNN or a norm layer), ``scheme`` the one applied,
    ``residual_end`` whether it ends a residual branch (zeroed), ``skipped`` why it was left
    alone ("frozen", "lazy") or None."""
    name: str
    kind: str
    activation: str
    slope: float | None
    found_by: str
    scheme: str
    residual_end: bool = False
    skipped: str | None = None


@dataclass(frozen=True)
class LayerScale:
    """One layer's output over the sample: its standard deviation and RMS, and for a layer that
    feeds tanh / sigmoid / hardtanh the fraction of that activation's inputs in its flat ends
    (|x| > 2 for tanh, 4 for sigmoid, 1 for hardtanh), else None."""
    name: str
    std: float
    rms: float
    saturated: float | None = None


@dataclass
class Scale:
    """The scale through depth: one :class:`LayerScale` per Linear/Conv/RNN layer, in the order
    of the forward (a layer called twice is measured on its first call)."""
    layers: list[LayerScale]

    def relative(self) -> list[float]:
        """Each layer's output std divided by the first layer's (inf / nan where it is 0)."""
        first = self.layers[0].std if self.layers else float("nan")
        return [s.std / first if first else (float("inf") if s.std else float("nan")) for s in self.layers]

    def table(self) -> str:
        rows = [(s.name or "(model)", _num(s.std), _num(s.rms), _num(r), _pct(s.saturated))
                for s, r in zip(self.layers, self.relative())]
        return _table(("layer", "std", "rms", "std/first", "saturated"), rows)

    __str__ = table

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [asdict(s) for s in self.layers]}


@dataclass
class Reinit:
    """What :func:`reinit` did: ``layers`` (one :class:`LayerInit` per layer, forward order where
    traced, else registration order), and the scale through depth ``before`` and ``after`` (None
    without a sample)."""
    layers: list[LayerInit]
    before: Scale | None = None
    after: Scale | None = None

    @property
    def residual_ends(self) -> list[str]:
        """The residual branches' last layers that were zeroed."""
        return [li.name for li in self.layers if li.residual_end and li.skipped is None]

    def table(self) -> str:
        before = {s.name: s for s in (self.before.layers if self.before else [])}
        after = {s.name: s for s in (self.after.layers if self.after else [])}
        rows = []
        for li in self.layers:
            feeds = "-" if li.found_by == "-" else (
                f"{li.activation}({li.slope:g})" if li.slope is not None else li.activation) + f" [{li.found_by}]"
            scheme = li.skipped and f"skipped ({li.skipped})" or (
                f"{li.scheme} (residual end)" if li.residual_end else li.scheme)
            b, a = before.get(li.name), after.get(li.name)
            rows.append((li.name or "(model)", li.kind, feeds, scheme, _num(b and b.std), _num(a and a.std),
                         _pct(b and b.saturated), _pct(a and a.saturated)))
        text = _table(("layer", "type", "feeds", "scheme", "std before", "std after", "sat. before",
                       "sat. after"), rows)
        if self.before and self.after and self.before.layers and self.after.layers:
            text += (f"\noutput std, last layer / first layer: before {_num(self.before.relative()[-1])}, "
                     f"after {_num(self.after.relative()[-1])}")
        return text

    __str__ = table

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [asdict(li) for li in self.layers], "residual_ends": list(self.residual_ends),
                "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


# -- public functions -------------------------------------------------------------------------------

def find_activations(model: nn.Module, sample: Any = None) -> dict[str, tuple[str, float | None, str]]:
    """What each Linear/Conv layer's output feeds: ``{module name: (activation, slope, found_by)}``
    with ``found_by`` "trace" (from a forward of ``sample``), "registration" (the first
    activation module registered after it) or "guess" (the model registers none: "relu")."""
    _check_model(model)
    return _found(model, _trace(model, sample) if sample is not None else None)


def activation_scale(model: nn.Module, sample: Any) -> Scale:
    """The std and RMS of each Linear/Conv/RNN layer's output over ``sample``, in forward order,
    measured in one traced forward (see the module docstring; the model is left as it was). Only
    the numbers are kept."""
    _check_model(model)
    return _trace(model, sample).scale()


def plan(model: nn.Module, sample: Any = None, *, zero_residual: bool = True,
         overrides: dict[str, str] | None = None, include_frozen: bool = False) -> list[LayerInit]:
    """What :func:`reinit` would do, without changing the model (arguments as there)."""
    _check_model(model)
    return _plan(model, _trace(model, sample) if sample is not None else None, zero_residual,
                 _check_overrides(overrides, model), include_frozen)


def reinit(model: nn.Module, sample: Any = None, *, zero_residual: bool = True,
           overrides: dict[str, str] | None = None, include_frozen: bool = False,
           lstm_forget_bias: float = 1.0, generator: torch.Generator | None = None) -> Reinit:
    """Re-initialise every Linear/Conv/RNN layer of ``model`` by the activation it feeds (found
    from ``sample`` if given, else from registration order), zero the last layer of each
    residual branch (``zero_residual``, needs ``sample``), apply ``overrides``
    (``{"glob": scheme}``), and report the scale through depth before and after (with
    ``sample``). ``lstm_forget_bias``: the LSTM forget gate's ``bias_ih``; ``generator``: a CPU
    ``torch.Generator`` for the draws (else torch's global RNG). See the module docstring for the
    schemes and rules."""
    _check_model(model)
    overrides = _check_overrides(overrides, model)
    _check_generator(generator)
    before = _trace(model, sample) if sample is not None else None
    layers = _plan(model, before, zero_residual, overrides, include_frozen)
    modules = dict(model.named_modules())
    for li in layers:
        if li.skipped is None:
            init_layer(modules[li.name], li.scheme, li.activation, slope=li.slope, include_frozen=include_frozen,
                       lstm_forget_bias=lstm_forget_bias, generator=generator)
    after = _trace(model, sample).scale() if sample is not None else None
    return Reinit(layers, before.scale() if before else None, after)


def scheme_for(activation: str) -> str:
    """The scheme for a layer whose output feeds ``activation`` ("relu", "tanh", ..., "linear")."""
    if activation in _HE:
        return "he"
    if activation in _XAVIER:
        return "xavier"
    if activation in _LECUN:
        return "lecun"
    raise ValueError(f"activation={activation!r} is not known; expected one of "
                     f"{sorted(_HE | _XAVIER | _LECUN)}")


def init_layer(module: nn.Module, scheme: str, activation: str = "linear", *, slope: float | None = None,
               include_frozen: bool = False, lstm_forget_bias: float = 1.0,
               generator: torch.Generator | None = None) -> None:
    """Initialise one Linear/Conv/RNN layer (or a norm layer, with "zero": its weight to 0) with
    ``scheme``, for a layer feeding ``activation`` (its gain; ``slope`` for leaky ReLU). Frozen
    parameters are left alone unless ``include_frozen``; lazy ones always."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module={module!r} is not a torch.nn.Module")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not a scheme; expected one of {list(SCHEMES)}")
    if activation != "-":
        scheme_for(activation)
    _check_generator(generator)
    if scheme == "keep":
        return

    def touch(p: torch.Tensor | None) -> bool:
        return (isinstance(p, torch.Tensor) and not nn.parameter.is_lazy(p)
                and (include_frozen or p.requires_grad))

    with torch.no_grad():
        if isinstance(module, NORMS):
            if scheme != "zero":
                raise ValueError(f"scheme={scheme!r} is not valid for the norm layer {type(module).__name__}; "
                                 f"expected 'zero' (its weight to 0) or 'keep'")
            if touch(getattr(module, "weight", None)):
                module.weight.zero_()
            return
        if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            _init_rnn(module, scheme, touch, lstm_forget_bias, generator)
            return
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            raise TypeError(f"module={type(module).__name__} is not a Linear, Conv, RNN or norm layer")
        w, b = module.weight, module.bias
        if touch(w):
            w.copy_(_draw(w.shape, scheme, activation, slope, generator))
        if touch(b):
            b.zero_()


def zero_residual_branches(model: nn.Module, sample: Any, *, include_frozen: bool = False) -> list[str]:
    """Zero the last layer of each residual branch found in a forward of ``sample`` (see the
    module docstring); returns their names."""
    _check_model(model)
    names = _trace(model, sample).residual_ends
    modules = dict(model.named_modules())
    for n in names:
        init_layer(modules[n], "zero", include_frozen=include_frozen)
    return names


# -- the schemes ------------------------------------------------------------------------------------

def _gain(activation: str, slope: float | None) -> float:
    if activation == "leaky_relu":
        return torch.nn.init.calculate_gain("leaky_relu", 0.01 if slope is None else slope)
    if activation in _HE:
        return torch.nn.init.calculate_gain("relu")
    if activation in ("tanh", "sigmoid"):
        return torch.nn.init.calculate_gain(activation)
    return 1.0


def _fans(shape: torch.Size) -> tuple[int, int]:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in = (shape[1] if len(shape) > 1 else shape[0]) * receptive
    return fan_in, shape[0] * receptive


def _draw(shape: torch.Size, scheme: str, activation: str, slope: float | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """Values for a weight of ``shape``, drawn on the CPU (float32)."""
    out = torch.empty(shape)
    if scheme == "zero" or out.numel() == 0:
        return out.zero_()
    if scheme == "orthogonal":
        return torch.nn.init.orthogonal_(out, _gain(activation, slope), generator=generator)
    fan_in, fan_out = _fans(shape)
    if scheme == "he":
        std = _gain(activation if activation in _HE else "relu", slope) / math.sqrt(fan_in)
    elif scheme == "xavier":
        std = (_gain(activation, slope) if activation in _XAVIER else 1.0) * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        std = 1.0 / math.sqrt(fan_in)
    return out.normal_(0.0, std, generator=generator)


def _init_rnn(module: nn.Module, scheme: str, touch, forget_bias: float, generator) -> None:
    gates = _GATES.get(type(module).__name__, _GATES.get(getattr(module, "mode", ""), 1))
    for name, p in module.named_parameters(recurse=False):
        if not touch(p):
            continue
        if name.startswith("bias"):
            p.zero_()
            if name.startswith("bias_ih") and gates == 4 and scheme != "zero":
                h = p.shape[0] // 4
                p[h:2 * h] = forget_bias
            continue
        blocks = gates if name.startswith(("weight_ih", "weight_hh")) else 1
        h = p.shape[0] // blocks
        for k in range(blocks):
            own = scheme
            if scheme == "orthogonal":
                own = "orthogonal" if name.startswith("weight_hh") else "xavier"
            p[k * h:(k + 1) * h] = _draw(p[k * h:(k + 1) * h].shape, own, "linear", None, generator)


# -- planning ---------------------------------------------------------------------------------------

def _plan(model: nn.Module, traced: "_Tracer | None", zero_residual: bool,
          overrides: dict[str, str], include_frozen: bool) -> list[LayerInit]:
    found = _found(model, traced)
    order = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    residual: set[str] = set()
    if traced is not None:
        seen, known = set(traced.called), set(order)
        order = [n for n in traced.called if n in known] + [n for n in order if n not in seen]
        if zero_residual:
            residual = set(traced.residual_ends)
    modules = dict(model.named_modules())
    out = []
    for name in order + [n for n in (traced.residual_ends if traced is not None and zero_residual else [])
                         if isinstance(modules[n], NORMS)]:
        m = modules[name]
        rnn = isinstance(m, (nn.RNNBase, nn.RNNCellBase))
        if isinstance(m, NORMS):
            act, slope, by, scheme = "-", None, "-", "zero"
        elif rnn:
            act, slope, by, scheme = "-", None, "-", "orthogonal"
        else:
            act, slope, by = found.get(name, ("linear", None, "registration"))
            scheme = scheme_for(act)
        end = name in residual
        if end:
            scheme = "zero"
        rule = next((s for g, s in overrides.items() if fnmatch.fnmatchcase(name, g)), None)
        if rule is not None and not isinstance(m, NORMS):
            scheme, end = rule, False
        params = list(m.parameters(recurse=False))
        skipped = None
        if any(nn.parameter.is_lazy(p) for p in params):
            skipped = "lazy"
        elif not include_frozen and params and not any(p.requires_grad for p in params):
            skipped = "frozen"
        elif scheme == "keep":
            skipped = "kept"
        out.append(LayerInit(name, type(m).__name__, act, slope, by, scheme, end, skipped))
    return out


def _found(model: nn.Module, traced: "_Tracer | None") -> dict[str, tuple[str, float | None, str]]:
    """Activation per Linear/Conv layer: traced where the forward reached the layer (the output
    reached no activation: "linear"), else from registration order."""
    found = _registration(model)
    if traced is not None:
        for n in traced.called:
            if n in found:
                a, s = traced.feeds.get(n, ("linear", None))
                found[n] = (a, s, "trace")
    return found


_MODULE_ACTS: list[tuple[type, str]] = [
    (nn.ReLU, "relu"), (nn.ReLU6, "relu"), (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.Mish, "mish"),
    (nn.Hardswish, "hardswish"), (nn.ELU, "elu"), (nn.CELU, "celu"), (nn.Softplus, "softplus"),
    (nn.SELU, "selu"), (nn.Tanh, "tanh"), (nn.Hardtanh, "hardtanh"), (nn.Softsign, "softsign"),
    (nn.Sigmoid, "sigmoid"), (nn.Hardsigmoid, "sigmoid")]


def _module_activation(m: nn.Module) -> tuple[str, float | None] | None:
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu", float(m.negative_slope)
    if isinstance(m, nn.RReLU):
        return "leaky_relu", (m.lower + m.upper) / 2
    if isinstance(m, nn.PReLU):
        return "leaky_relu", float(m.weight.detach().float().mean()) if not nn.parameter.is_lazy(m.weight) else 0.25
    for cls, name in _MODULE_ACTS:
        if isinstance(m, cls):
            return name, None
    return None


def _registration(model: nn.Module) -> dict[str, tuple[str, float | None, str]]:
    """Activation per Linear/Conv layer from registration order (see :func:`find_activations`)."""
    found: dict[str, tuple[str, float | None, str]] = {}
    waiting: list[str] = []
    any_act = False
    for name, m in model.named_modules():
        if isinstance(m, LAYERS):
            found.update({w: ("linear", None, "registration") for w in waiting})
            waiting = [name] if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) else []
            continue
        act = _module_activation(m)
        if act is not None:
            any_act = True
            found.update({w: (*act, "registration") for w in waiting})
            waiting = []
    found.update({w: ("linear", None, "registration") for w in waiting})
    if not any_act:
        found = {n: ("relu", None, "guess") for n in found}
    return found


# -- checks -----------------------------------------------------------------------------------------

def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model={model!r:.80} is not a torch.nn.Module")


def _check_generator(generator: Any) -> None:
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise TypeError(f"generator={generator!r} is not valid; expected a CPU torch.Generator (e.g. "
                        f"torch.Generator().manual_seed(0)) or None")


def _check_overrides(overrides: Any, model: nn.Module) -> dict[str, str]:
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise TypeError(f"overrides={overrides!r:.80} is not a dict; expected {{'name glob': scheme}} "
                        f"with a scheme from {list(SCHEMES)}")
    names = [n for n, m in model.named_modules() if isinstance(m, LAYERS)]
    for glob, scheme in overrides.items():
        if scheme not in SCHEMES:
            raise ValueError(f"overrides[{glob!r}]={scheme!r} is not a scheme; expected one of {list(SCHEMES)}")
        if not isinstance(glob, str) or not any(fnmatch.fnmatchcase(n, glob) for n in names):
            raise ValueError(f"overrides key {glob!r} matches no layer of {type(model).__name__}; expected a "
                             f"glob on layer names such as {', '.join(repr(n) for n in names[:5])}")
    return dict(overrides)


def _describe(sample: Any) -> str:
    if isinstance(sample, torch.Tensor):
        return f"<tensor of shape {tuple(sample.shape)}, {sample.dtype}>"
    text = repr(sample)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the traced forward -----------------------------------------------------------------------------

class _Rec:
    """What the trace knows of one tensor: the records it was computed from, the layers whose
    output it still carries (no activation since), and the last layer (with that layer's output
    record) on a plain path of ops that keep zero at zero."""
    __slots__ = ("parents", "pending", "last", "layers")

    def __init__(self, parents: tuple["_Rec", ...] = (), pending: frozenset = frozenset(),
                 last: tuple[str, "_Rec"] | None = None, layers: int = 0) -> None:
        self.parents, self.pending, self.last, self.layers = parents, pending, last, layers


_ACTIVATIONS = {"relu": "relu", "relu6": "relu", "leaky_relu": "leaky_relu", "rrelu": "leaky_relu",
                "prelu": "leaky_relu", "gelu": "gelu", "silu": "silu", "mish": "mish", "hardswish": "hardswish",
                "elu": "elu", "celu": "celu", "softplus": "softplus", "selu": "selu", "tanh": "tanh",
                "hardtanh": "hardtanh", "softsign": "softsign", "sigmoid": "sigmoid", "hardsigmoid": "sigmoid"}
_PASS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "dropout", "dropout1d",
         "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "reshape", "view", "view_as",
         "flatten", "unflatten", "permute", "transpose", "t", "contiguous", "squeeze", "unsqueeze", "clone", "to",
         "float", "half", "bfloat16", "double", "type", "type_as", "getitem", "narrow", "chunk", "split",
         "unbind", "cat", "concat", "concatenate", "stack", "add", "sub", "mul", "div", "neg", "pad", "max_pool1d",
         "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
         "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
         "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
         "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
         "adaptive_max_pool3d_with_indices", "interpolate", "pixel_shuffle", "pixel_unshuffle", "movedim",
         "swapaxes", "roll"}
_DUNDER = {"__add__": "add", "__radd__": "add", "__iadd__": "add", "__sub__": "sub", "__rsub__": "sub",
           "__isub__": "sub", "__mul__": "mul", "__rmul__": "mul", "__imul__": "mul", "__truediv__": "div",
           "__itruediv__": "div", "__neg__": "neg", "__getitem__": "getitem"}
_CHAIN = 64      # records followed back along a plain chain when matching a downsample


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name.startswith("__"):
        return _DUNDER.get(name, "")
    return name[:-1] if name.endswith("_") else name


class _Tracer(TorchFunctionMode):
    """Follows each layer's output to the activation it feeds, finds residual adds, and (with
    the module hooks it is given) measures each layer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.recs: dict[int, tuple[weakref.ref, _Rec]] = {}
        self.feeds: dict[str, tuple[str, float | None]] = {}
        self.saturation: dict[str, float] = {}
        self.scales: dict[str, tuple[float, float]] = {}
        self.residual_ends: list[str] = []
        self.off = False

    def rec(self, t: torch.Tensor) -> _Rec | None:
        entry = self.recs.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def put(self, t: torch.Tensor, rec: _Rec) -> None:
        self.recs[id(t)] = (weakref.ref(t), rec)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.off:
            return func(*args, **kwargs)
        name = _op_name(func)
        ins: list[tuple[torch.Tensor, _Rec]] = []
        if name:
            for t in tensors_in((args, kwargs)):
                r = self.rec(t)
                if r is not None and all(r is not q for _, q in ins):
                    ins.append((t, r))
        act = _ACTIVATIONS.get(name) if ins and args and isinstance(args[0], torch.Tensor) else None
        try:
            if act is not None:
                self._activation(name, act, args, kwargs)
            elif name == "add" and len(ins) == 2 and ins[0][0].shape == ins[1][0].shape:
                self._maybe_residual(ins[0][1], ins[1][1])
        except Exception as e:                               # pragma: no cover - a bug of ours
            self._give_up(e)
        out = func(*args, **kwargs)
        if ins and not self.off:
            try:
                self._record(name, act, ins, args, out)
            except Exception as e:                           # pragma: no cover
                self._give_up(e)
        return out

    def _give_up(self, e: Exception) -> None:
        self.off = True
        warnings.warn(f"trainmedic.initialize: tracing stopped ({type(e).__name__}: {e}); layers not "
                      f"reached fall back to registration order", RuntimeWarning, stacklevel=3)

    def _activation(self, name: str, act: str, args: tuple, kwargs: dict) -> None:
        x = args[0]
        r = self.rec(x)
        if r is None or not r.pending:
            return
        slope = None
        if act == "leaky_relu":
            if name == "prelu":
                w = args[1] if len(args) > 1 else kwargs.get("weight")
                slope = float(w.detach().float().mean())
            elif name == "rrelu":
                lower = args[1] if len(args) > 1 else kwargs.get("lower", 1 / 8)
                upper = args[2] if len(args) > 2 else kwargs.get("upper", 1 / 3)
                slope = (lower + upper) / 2
            else:
                slope = float(args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
        sat = None
        if act in _SATURATES_AT and x.is_floating_point() and x.numel():
            sat = float((x.detach().abs() > _SATURATES_AT[act]).float().mean())
        for layer in r.pending:
            if layer not in self.feeds:
                self.feeds[layer] = (act, slope)
                if sat is not None:
                    self.saturation[layer] = sat

    def _record(self, name: str, act: str | None, ins: list, args: tuple, out: Any) -> None:
        outs = [t for t in tensors_in(out)]
        if not outs:
            return
        recs = tuple(r for _, r in ins)
        layers = max(r.layers for r in recs)
        if act is not None:
            first = self.rec(args[0]) or recs[0]
            rec = _Rec(recs, frozenset(), first.last if act in _ZERO_AT_ZERO else None, layers)
        elif name in _PASS:
            pending = frozenset().union(*(r.pending for r in recs))
            rec = _Rec(recs, pending, recs[0].last if len(recs) == 1 else None, layers)
        else:
            rec = _Rec(recs, frozenset(), None, layers)
        for t in outs:
            self.put(t, rec)

    # residual branches

    def _maybe_residual(self, a: _Rec, b: _Rec) -> None:
        for branch, skip in ((a, b), (b, a)):
            if branch.last is None:
                continue
            layer, out = branch.last
            if _reaches(out, skip) and not _reaches(skip, out):         # skip is the block's input
                self._residual(layer)
                return
        for branch, skip in ((a, b), (b, a)):                           # skip through a downsample
            if branch.last is None:
                continue
            starts = {id(r) for r, n in _chain(skip) if n == 1}     # one layer (and norms) back
            for r, n in _chain(branch):
                if id(r) in starts and n > 1:
                    if not _reaches(skip, branch.last[1]):
                        self._residual(branch.last[0])
                    return

    def _residual(self, layer: str) -> None:
        if layer not in self.residual_ends:
            self.residual_ends.append(layer)

    # module hooks

    def layer_hook(self, name: str, last: str | None = None):
        """A forward hook for layer ``name`` (``last``: the layer the output is the output of, for
        nn.MultiheadAttention's out_proj)."""
        own = last or name

        def hook(module, inputs, output):
            if not self.off:
                try:
                    measure(module, output)
                except Exception as e:                       # pragma: no cover - a bug of ours
                    self._give_up(e)

        def measure(module, output):
            out = output[0] if isinstance(output, tuple) else output
            out = getattr(out, "data", out) if not isinstance(out, torch.Tensor) else out   # PackedSequence
            if not isinstance(out, torch.Tensor):
                return
            first = own not in self.scales
            if first:
                o = out.detach().float()
                self.scales[own] = (float(o.std(correction=0)) if o.numel() else 0.0,
                                    float(o.pow(2).mean().sqrt()) if o.numel() else 0.0)
            r = self.rec(out)
            rnn = isinstance(module, (nn.RNNBase, nn.RNNCellBase))
            rec = _Rec((r,) if r else (), frozenset() if rnn or not first else frozenset({own}), None,
                       (r.layers if r else 0) + 1)
            if not rnn:
                rec.last = (own, rec)
            self.put(out, rec)
        return hook

    def norm_hook(self, name: str):
        def hook(module, inputs, output):
            r = self.rec(output) if isinstance(output, torch.Tensor) and not self.off else None
            if r is not None and getattr(module, "weight", None) is not None:
                rec = _Rec((r,), r.pending, None, r.layers)
                rec.last = (name, rec)
                self.put(output, rec)
        return hook

    @property
    def called(self) -> list[str]:
        """The layers measured, in the order of their first call."""
        return list(self.scales)

    def scale(self) -> Scale:
        return Scale([LayerScale(n, *self.scales[n], self.saturation.get(n)) for n in self.called])


def _reaches(start: _Rec, target: _Rec) -> bool:
    """``target`` is ``start`` or one of the records it was computed from."""
    stack, seen = [start], set()
    while stack:
        r = stack.pop()
        if r is target:
            return True
        if id(r) not in seen:
            seen.add(id(r))
            stack.extend(r.parents)
    return False


def _chain(r: _Rec) -> list[tuple[_Rec, int]]:
    """The records before ``r`` along its plain chain (each computed from one record), with the
    number of layers between each and ``r``."""
    out, n = [], 0
    while len(r.parents) == 1 and len(out) < _CHAIN:
        if r.last is not None and r.last[1] is r and r.layers > r.parents[0].layers:
            n += 1
        r = r.parents[0]
        out.append((r, n))
    return out


def _trace(model: nn.Module, sample: Any) -> _Tracer:
    """One forward of ``sample`` under the tracer, with the model, its buffers and torch's RNG
    left as they were."""
    if not isinstance(sample, (torch.Tensor, tuple, list, dict)):
        raise TypeError(f"sample={_describe(sample)} is not a tensor, tuple or dict; expected an input "
                        f"{type(model).__name__} takes: a tensor (model(sample)), a tuple (model(*sample)) "
                        f"or a dict (model(**sample))")
    tracer = _Tracer()
    handles = []
    modules = list(model.named_modules())
    for name, m in modules:
        if isinstance(m, LAYERS):
            handles.append(m.register_forward_hook(tracer.layer_hook(name)))
        elif isinstance(m, NORMS):
            handles.append(m.register_forward_hook(tracer.norm_hook(name)))
        elif isinstance(m, nn.MultiheadAttention):
            handles.append(m.register_forward_hook(tracer.layer_hook(name, f"{name}.out_proj" if name else "out_proj")))
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not nn.parameter.is_lazy(b)]
    devices = cuda_devices([*tensors_in(sample), *model.parameters()])
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for t in tensors_in(sample):
                tracer.put(t, _Rec())
            try:
                with tracer:
                    call_with(model, sample)
            except Exception as e:
                raise ValueError(f"sample={_describe(sample)} does not fit {type(model).__name__}: its forward "
                                 f"raised {type(e).__name__}: {e}; expected an input the model takes: a tensor "
                                 f"(model(sample)), a tuple (model(*sample)) or a dict (model(**sample))") from e
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
    tracer.recs.clear()
    return tracer
