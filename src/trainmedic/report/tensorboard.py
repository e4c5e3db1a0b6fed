"""TensorBoard event files, from the same tick lines and epoch records as every renderer:
scalars (loss, LR, per-layer gradient norm and update ratio, dead/saturated fractions,
validation per epoch) and histograms (activation distributions per site)."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainmedic.report.plots import _num


class TensorBoardWriter:
    """A tick sink for the monitor (``on_tick``/``close``) that writes through
    ``torch.utils.tensorboard.SummaryWriter``, made at the first tick (a distributed worker
    that learns it is not rank 0 before then writes no event file)."""

    def __init__(self, logdir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter   # a missing tensorboard fails here
        self.logdir = logdir
        self.writer: SummaryWriter | None = None
        self._epochs_written = 0

    def on_tick(self, line: dict[str, Any], epochs: list[dict[str, Any]]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=self.logdir)
        w, step = self.writer, line["step"]
        for i, v in enumerate(line.get("losses") or []):
            if _num(v) is not None:
                w.add_scalar("train/loss", v, line["first_step"] + i)
        if _num(line.get("lr")) is not None:
            w.add_scalar("train/lr", line["lr"], step)
        for layer, v in (line.get("layers") or {}).items():
            if _num(v.get("grad")) is not None:
                w.add_scalar(f"grad_norm/{layer}", v["grad"], step)
            if _num(v.get("update")) is not None:
                w.add_scalar(f"update_ratio/{layer}", v["update"], step)
        for site, a in (line.get("activations") or {}).items():
            for key in ("dead_fraction", "saturated_fraction"):
                if _num(a.get(key)) is not None:
                    w.add_scalar(f"activations/{site}/{key}", a[key], step)
            if a.get("hist") and all(_num(v) is not None for v in a["hist"]):
                self._histogram(f"activations/{site}", a["hist"], a["hist_range"], step)
        for e in epochs[self._epochs_written:]:
            for key in ("val_loss", "val_acc", "train_loss", "train_acc"):
                if _num(e.get(key)) is not None:
                    w.add_scalar(f"epoch/{key}", e[key], e["epoch"])
        self._epochs_written = len(epochs)
        w.flush()

    def _histogram(self, tag: str, fractions: list[float], value_range: list[float], step: int) -> None:
        counts = np.asarray(fractions, dtype=float) * 1000
        edges = np.linspace(value_range[0], value_range[1], len(counts) + 1)
        mids = (edges[:-1] + edges[1:]) / 2
        total = counts.sum()
        if total <= 0:
            return
        self.writer.add_histogram_raw(
            tag, min=float(edges[0]), max=float(edges[-1]), num=float(total),
            sum=float((counts * mids).sum()), sum_squares=float((counts * mids ** 2).sum()),
            bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(), global_step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def export_run(ticks: list[dict[str, Any]], epochs: list[dict[str, Any]], logdir: str) -> None:
    """Write a finished run's tick lines and epochs as TensorBoard events."""
    writer = TensorBoardWriter(logdir)
    for line in ticks:
        writer.on_tick(line, [])
    writer.on_tick({"step": ticks[-1]["step"] if ticks else 0, "first_step": 0}, epochs)
    writer.close()
