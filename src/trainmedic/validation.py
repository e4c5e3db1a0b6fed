"""Validation awareness: evaluation passes seen at run time, grouped into epochs.

A *validation phase* is a run of loss calls made without gradients (or right after an
eval-mode forward) between two optimizer steps; it closes at the next training step. Each
phase becomes one epoch record: train loss since the previous phase, validation loss and
accuracy, and (for classification) the per-sample predictions of the last phase, kept for the
metrics, plus the k worst mistakes with their inputs. Everything stays on the device until the
phase closes, then one host copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MAX_SAMPLES = 100_000     # per-sample predictions kept for the metrics of the last phase
WORST_K = 8
THUMB = 32                # worst-mistake inputs are downsampled to at most THUMB x THUMB


class ValidationTracker:
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.open = False
        self.eval_forward = False           # the last root forward ran in eval mode / no grad
        self._train_mode_now = False
        self._stochastic_cache: dict[int, bool] = {}
        self._input: torch.Tensor | None = None
        self._reset_phase()
        self.last_predictions: dict[str, np.ndarray] | None = None
        self.worst: dict[str, Any] | None = None

    def _reset_phase(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._counts: list[int] = []
        self._preds: list[tuple[torch.Tensor, ...]] = []
        self._seen = 0
        self._worst: list[torch.Tensor | None] | None = None
        self._phase_train_mode = False
        self._classes = 0

    # -- events ---------------------------------------------------------------------------------
    def on_root_forward(self, module: torch.nn.Module, args: tuple) -> None:
        evaluating = not torch.is_grad_enabled() or not module.training
        self.eval_forward = evaluating
        if evaluating:
            self._train_mode_now = module.training and self._stochastic(module)
            self._input = args[0] if args and torch.is_tensor(args[0]) else None

    def _stochastic(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` holds dropout or BatchNorm layers (cached per model)."""
        found = self._stochastic_cache.get(id(module))
        if found is None:
            found = self._stochastic_cache[id(module)] = any(
                isinstance(m, (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm))
                for m in module.modules())
        return found

    def on_loss_call(self, name: str, output: Any, target: Any, loss: torch.Tensor) -> None:
        """A loss computed during evaluation: record it (and the predictions, when classes)."""
        if not torch.is_tensor(loss) or loss.numel() != 1:
            return
        self.open = True
        self._phase_train_mode |= self._train_mode_now
        n = int(output.shape[0]) if torch.is_tensor(output) and output.dim() else 1
        self._losses.append(loss.detach().float().reshape(()) * n)
        self._counts.append(n)
        if name in ("cross_entropy", "nll_loss") and torch.is_tensor(target) and output.dim() == 2 \
                and not target.is_floating_point() and self._seen < MAX_SAMPLES:
            self._record_classes(name, output.detach(), target.detach())

    def _record_classes(self, name: str, out: torch.Tensor, target: torch.Tensor) -> None:
        probs = out.float().softmax(1) if name == "cross_entropy" else out.float().exp()
        conf, pred = probs.max(1)
        valid = (target >= 0) & (target < out.shape[1])
        p_true = probs.gather(1, target.clamp(0, out.shape[1] - 1).unsqueeze(1)).squeeze(1)
        p_true = torch.where(valid, p_true, torch.ones_like(p_true))
        idx = torch.arange(self._seen, self._seen + len(target), device=out.device)
        self._classes = int(out.shape[1])
        self._preds.append((pred, target, conf, p_true))
        x = self._input if self._input is not None and len(self._input) == len(target) else None
        self._keep_worst(p_true, idx, x, pred, target)
        self._seen += len(target)

    def _keep_worst(self, p_true, idx, x, pred, target) -> None:
        """Running top-k of lowest probability on the true class, on the device (no sync).
        Rows are (p_true, index, predicted, target, thumbnail); thumbnails are dropped for the
        phase when inputs are missing or change shape."""
        order = torch.topk(-p_true, min(WORST_K, len(p_true))).indices
        cand = [p_true[order], idx[order], pred[order], target[order],
                _thumb(x[order]) if x is not None else None]
        if self._worst is not None:
            old = list(self._worst)
            if old[4] is None or cand[4] is None or old[4].shape[1:] != cand[4].shape[1:]:
                old[4] = cand[4] = None
            cand = [torch.cat([a, b]) if a is not None else None for a, b in zip(old, cand)]
            keep = torch.topk(-cand[0], min(WORST_K, len(cand[0]))).indices
            cand = [c[keep] if c is not None else None for c in cand]
        self._worst = cand

    def close_phase(self, step: int, train_loss: float | None, train_acc: float | None) -> dict | None:
        """The phase ended (a training step or the end of the run): make its epoch record."""
        if not self.open:
            return None
        self.open = False
        total = float(torch.stack(self._losses).sum()) if self._losses else float("nan")
        n = sum(self._counts)
        record = {"epoch": len(self.epochs) + 1, "step": step, "val_loss": total / max(n, 1),
                  "val_samples": n,
                  "train_loss": train_loss,
                  "train_acc": train_acc, "model_in_train_mode": self._phase_train_mode}
        if self._preds:
            pred, target, conf, p_true = (torch.cat(t).cpu().numpy() for t in zip(*self._preds))
            record["val_acc"] = float((pred == target).mean())
            record["val_top_class_share"] = float(np.bincount(pred).max() / len(pred))
            record["classes"] = self._classes
            self.last_predictions = {"pred": pred, "target": target, "confidence": conf, "p_true": p_true}
            self.worst = self._worst_to_host()
        self.epochs.append(record)
        self._reset_phase()
        return record

    def _worst_to_host(self) -> dict[str, Any] | None:
        if self._worst is None:
            return None
        p, idx, pred, target, x = self._worst
        out = {"index": idx.cpu().tolist(), "p_true": p.cpu().tolist(), "predicted": pred.cpu().tolist(),
               "target": target.cpu().tolist()}
        if x is not None:
            out["inputs"] = np.round(x.float().cpu().numpy(), 4).tolist()
        return out


def _thumb(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) downsampled to at most THUMB x THUMB; other inputs up to 256 values."""
    x = x.detach().float()
    if x.dim() == 4 and max(x.shape[-2:]) > THUMB:
        x = torch.nn.functional.adaptive_avg_pool2d(x, (min(THUMB, x.shape[-2]), min(THUMB, x.shape[-1])))
    elif x.dim() != 4:
        x = x.reshape(len(x), -1)[:, :256]
    return x
