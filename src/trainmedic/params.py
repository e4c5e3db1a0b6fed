"""ParamTable: every parameter a monitor watches, with a stable index, a readable name and the
optimizer that owns it. Indices never change once given, so per-step buffers stay aligned.

Wrapped models keep the user's names: the path components that wrappers insert
(``_fsdp_wrapped_module`` of FSDP, ``_checkpoint_wrapped_module`` of activation checkpointing,
the leading ``module`` of DistributedDataParallel / DataParallel) are left out.

Sharded parameters (FSDP2's DTensors, FSDP's parameters and flat parameters): the table keeps
each parameter's whole shape; every rank measures the shard it holds (:func:`local_view`, no
communication) and states it on the whole parameter's scale, see SHARDED_NOTE.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

WRAPPERS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module"})

SHARDED_NOTE = (
    "Parameters are sharded across ranks (FSDP): each rank measures the shard it holds, without "
    "communication. A parameter's gradient, weight and update norms are its shard's norm times "
    "sqrt(parameter size / shard size), i.e. sqrt(size) x the shard's RMS: the whole parameter's "
    "norm when its shards have equal RMS, an estimate otherwise; update/weight and "
    "gradient/weight ratios are exact for the shard. Rank 0's report shows rank 0's shards; a "
    "parameter this rank holds no element of is not measured here.")


def local_view(t: torch.Tensor) -> torch.Tensor:
    """The elements of ``t`` this rank holds, with no communication: a DTensor's local shard
    (the stored tensor itself, not a copy), any other tensor as it is."""
    if type(t) is torch.Tensor or type(t) is torch.nn.Parameter or not _is_dtensor(t):
        return t
    with torch.no_grad():                 # to_local() is then the stored local tensor
        return t.to_local()


def _is_dtensor(t: Any) -> bool:
    mod = sys.modules.get("torch.distributed.tensor")   # no DTensor exists before it is imported
    cls = getattr(mod, "DTensor", None)
    return cls is not None and isinstance(t, cls)


def user_name(name: str, root: "torch.nn.Module | None" = None) -> str:
    """``name`` (of a parameter or module of ``root``) as the user's own module names it."""
    parts = [c for c in name.split(".") if c not in WRAPPERS]
    if root is not None and parts and parts[0] == "module" and _data_parallel(root):
        parts = parts[1:]
    return ".".join(parts)


def _data_parallel(root: torch.nn.Module) -> bool:
    return type(root).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(root, "module")


def _fsdp1_shapes(model: torch.nn.Module) -> dict[int, tuple[int, ...]]:
    """FSDP (FullyShardedDataParallel) parameters of ``model``, held on each rank as a flat
    1-D piece: {id(parameter): the whole parameter's shape}. With ``use_orig_params=True``
    the original parameters; otherwise each FSDP unit's flat parameter (one per unit)."""
    if "torch.distributed.fsdp" not in sys.modules:
        return {}
    out: dict[int, tuple[int, ...]] = {}
    for m in model.modules():
        if type(m).__name__ != "FullyShardedDataParallel":
            continue
        flat = getattr(m, "_flat_param", None)
        if flat is None:
            continue
        try:                              # FSDP's private layout: read, never relied upon
            params = getattr(flat, "_params", None)
            if params is not None:
                out.update({id(p): tuple(s) for p, s in zip(params, flat._shapes)})
            else:
                out[id(flat)] = tuple(flat._unpadded_unsharded_size)
        except Exception:  # noqa: BLE001 - another layout: its pieces are measured as they are
            continue
    return out


@dataclass
class ParamInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    optimizer: int | None = None   # index into ParamTable.optimizers
    group: int | None = None
    sharded: bool = False          # this rank holds a shard of it (FSDP); shape is the whole's

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_matrix(self) -> bool:
        """Weights of linear/conv/embedding layers (not biases or norm scales)."""
        return len(self.shape) >= 2

    @property
    def layer(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name


@dataclass
class ParamTable:
    params: list[torch.Tensor] = field(default_factory=list)
    infos: list[ParamInfo] = field(default_factory=list)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    sharded: bool = False          # some parameter is sharded across ranks (SHARDED_NOTE)
    _index: dict[int, int] = field(default_factory=dict)
    _opt_index: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.params)

    def index_of(self, p: torch.Tensor) -> int | None:
        return self._index.get(id(p))

    def add(self, p: torch.Tensor, name: str, whole: tuple[int, ...] | None = None) -> int:
        """Register ``p`` (or rename it when it is known under a generated name). ``whole``: the
        whole parameter's shape when ``p`` is an FSDP shard held flat (a DTensor knows its own)."""
        sharded = whole is not None or _is_dtensor(p) or bool(getattr(p, "_is_flat_param", False))
        i = self._index.get(id(p))
        if i is not None:
            info = self.infos[i]
            if info.name.startswith("optimizer"):
                info.name = name
                if sharded:
                    info.shape, info.sharded, self.sharded = whole or tuple(p.shape), True, True
            return i
        i = len(self.params)
        self._index[id(p)] = i
        self.params.append(p)
        self.infos.append(ParamInfo(i, name, whole or tuple(p.shape), sharded=sharded))
        self.sharded |= sharded
        return i

    def add_model(self, model: torch.nn.Module, prefix: str = "") -> None:
        """The model's trainable parameters, named as in the user's module (wrappers' path
        components left out); placeholders on the meta device (a layer not built yet, e.g. a
        Keras layer before its first call) are left out."""
        whole = _fsdp1_shapes(model)
        for name, p in model.named_parameters():
            if p.requires_grad and not p.is_meta:
                self.add(p, prefix + user_name(name, model), whole.get(id(p)))

    def optimizer_index(self, opt: torch.optim.Optimizer) -> int | None:
        k = self._opt_index.get(id(opt))
        return k if k is not None and self.optimizers[k] is opt else None

    def add_optimizer(self, opt: torch.optim.Optimizer) -> int:
        """Register ``opt`` and its parameters; returns the optimizer's index."""
        k = self.optimizer_index(opt)
        if k is not None:
            return k
        k = len(self.optimizers)
        self.optimizers.append(opt)
        self._opt_index[id(opt)] = k
        self.sync_optimizer(k)
        return k

    def sync_optimizer(self, k: int) -> None:
        """Pick up param groups added to optimizer ``k`` since it was registered."""
        opt = self.optimizers[k]
        for g, group in enumerate(opt.param_groups):
            for j, p in enumerate(group["params"]):
                i = self.add(p, f"optimizer{k}.group{g}.param{j}")
                self.infos[i].optimizer, self.infos[i].group = k, g

    def optimizer_indices(self, k: int) -> list[int]:
        return [self._index[id(p)] for group in self.optimizers[k].param_groups
                for p in group["params"]]

    def owned(self) -> set[int]:
        return {i.index for i in self.infos if i.optimizer is not None}
