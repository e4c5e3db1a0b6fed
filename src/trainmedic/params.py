"""ParamTable: every parameter a monitor watches, with a stable index, a readable name and the
optimizer that owns it. Indices never change once given, so per-step buffers stay aligned."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ParamInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    optimizer: int | None = None   # index into ParamTable.optimizers
    group: int | None = None

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
    _index: dict[int, int] = field(default_factory=dict)
    _opt_index: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.params)

    def index_of(self, p: torch.Tensor) -> int | None:
        return self._index.get(id(p))

    def add(self, p: torch.Tensor, name: str) -> int:
        """Register ``p`` (or rename it when it is known under a generated name)."""
        i = self._index.get(id(p))
        if i is not None:
            if self.infos[i].name.startswith("optimizer"):
                self.infos[i].name = name
            return i
        i = len(self.params)
        self._index[id(p)] = i
        self.params.append(p)
        self.infos.append(ParamInfo(i, name, tuple(p.shape)))
        return i

    def add_model(self, model: torch.nn.Module, prefix: str = "") -> None:
        """The model's trainable parameters; placeholders on the meta device (a layer not built
        yet, e.g. a Keras layer before its first call) are left out."""
        for name, p in model.named_parameters():
            if p.requires_grad and not p.is_meta:
                self.add(p, prefix + name)

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
