"""Validation awareness: evaluation passes seen at run time, grouped into epochs.

A *validation phase* is a run of loss calls made without gradients (or right after an
eval-mode forward) between two optimizer steps; it closes at the next training step. Each
phase becomes one epoch record: train loss since the previous phase, validation loss and
accuracy, and (for classification) per-class counts, the per-sample predictions of the first
MAX_SAMPLES samples of the last phase (for the confusion pairs and coverage), plus the k worst
mistakes with their inputs. Targets equal to the loss call's ``ignore_index`` (default -100)
are not judged. The state of a phase is bounded: running sums and per-class counts (O(classes))
on the device, no per-batch lists; one host copy when the phase closes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

MAX_SAMPLES = 100_000     # per-sample predictions kept (the first ones of the phase)
WORST_K = 8
THUMB = 32                # worst-mistake inputs are downsampled to at most THUMB x THUMB
CHUNK = 1 << 22           # softmax over at most this many logits at a time (bounded transient)


class ValidationTracker:
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.open = False
        self.eval_mode_with_grad = False
        self.eval_forward: bool | None = None   # the last root forward since the last optimizer
        #                                         step ran in eval mode / no grad (None: no forward)
        self._eval_mode_forward = False     # ... in eval mode
        self._train_mode_now = False
        self._stochastic_cache: dict[int, bool] = {}
        self._input: torch.Tensor | None = None
        self._reset_phase()
        self.last_predictions: dict[str, np.ndarray] | None = None
        self.last_counts: dict[str, np.ndarray] | None = None
        self.worst: dict[str, Any] | None = None

    def _reset_phase(self) -> None:
        self._loss_sum: torch.Tensor | None = None    # sum of loss x weight, on the device
        self._weight: Any = 0                         # samples (int) or judged targets (tensor)
        self._counts: torch.Tensor | None = None      # (3, C): support, predicted, correct
        self._preds: list[tuple[torch.Tensor, ...]] = []
        self._kept = 0                                # rows in _preds (capped at MAX_SAMPLES)
        self._seen = 0                                # classification rows seen this phase
        self._worst: list[torch.Tensor | None] | None = None
        self._phase_train_mode = False
        self._phase_grad = False                      # a loss of the phase carries a graph
        self._mc_sampling = False
        self._classes = 0

    # -- events ---------------------------------------------------------------------------------
    def on_root_forward(self, module: torch.nn.Module, args: tuple) -> None:
        evaluating = not torch.is_grad_enabled() or not module.training
        self.eval_forward = evaluating
        self._eval_mode_forward = not module.training
        # a forward with gradients of a model whose dropout/BatchNorm is in eval mode
        self.eval_mode_with_grad = (not module.training) and torch.is_grad_enabled() and self._stochastic(module)
        if evaluating:
            self._train_mode_now = module.training and self._stochastic(module)
            x = args[0] if args and torch.is_tensor(args[0]) else None
            # The same batch forwarded again in training mode: Monte-Carlo dropout, on purpose.
            self._mc_sampling |= self._train_mode_now and x is not None and x is self._input
            self._input = x

    def is_eval_loss(self) -> bool:
        """Whether a loss call now belongs to an evaluation: the last watched root forward since
        the last optimizer step evaluated (no grad or eval mode), and the loss is computed
        without gradients or after an eval-mode forward. A no-grad loss inside a training forward (a checkpointed segment, a
        custom autograd Function) or a training loss after a no-grad teacher forward is not."""
        if self.eval_forward is None:       # no watched forward since the step (an unhooked or
            return not torch.is_grad_enabled()    # compiled model): no gradients = evaluation
        return self.eval_forward and (not torch.is_grad_enabled() or self._eval_mode_forward)

    @property
    def eval_input(self) -> torch.Tensor | None:
        """The input of the last evaluation forward."""
        return self._input

    def _stochastic(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` holds dropout or BatchNorm layers (cached per model)."""
        found = self._stochastic_cache.get(id(module))
        if found is None:
            found = self._stochastic_cache[id(module)] = any(
                isinstance(m, (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm))
                for m in module.modules())
        return found

    def on_loss_call(self, name: str, output: Any, target: Any, loss: torch.Tensor,
                     ignore_index: int | None = -100, summed: bool = False) -> None:
        """A loss computed during evaluation: record it (and the predictions, when classes).
        ``ignore_index``: targets with this value are not judged (cross_entropy/nll_loss).
        ``summed``: the loss was reduced with reduction="sum" (already a sum over the batch)."""
        if not torch.is_tensor(loss) or loss.numel() != 1:
            return
        self.open = True
        self._phase_grad |= loss.requires_grad
        self._phase_train_mode |= self._train_mode_now
        weight: Any = int(output.shape[0]) if torch.is_tensor(output) and output.dim() else 1
        if name in ("cross_entropy", "nll_loss") and torch.is_tensor(target) and torch.is_tensor(output) \
                and output.dim() == 2 and not target.is_floating_point() and target.shape == output.shape[:1]:
            # mean reduction averages over the judged targets: weight the loss by their count
            weight = self._record_classes(name, output.detach(), target.detach(), ignore_index)
        value = loss.detach().float().reshape(())
        if summed:
            part = value
        elif torch.is_tensor(weight):        # a batch of ignored targets only: its loss is NaN
            part = torch.where(weight > 0, value * weight, torch.zeros_like(value))
        else:
            part = value * weight
        self._loss_sum = part if self._loss_sum is None else self._loss_sum + part
        self._weight = self._weight + weight

    def _record_classes(self, name: str, out: torch.Tensor, target: torch.Tensor,
                        ignore_index: int | None) -> torch.Tensor:
        """Per-class counts (support, predicted, correct) added on the device, the first
        MAX_SAMPLES predictions kept, the running worst-k updated. Returns the judged count."""
        c = int(out.shape[1])
        valid = (target >= 0) & (target < c)
        if ignore_index is not None:
            valid &= target != ignore_index
        pred, conf, p_true = _class_stats(name, out, target.clamp(0, c - 1))
        p_true = torch.where(valid, p_true, torch.ones_like(p_true))
        # Unjudged rows go to an overflow bin (index c), dropped when the phase closes.
        t = torch.where(valid, target, c)
        counts = torch.stack([torch.bincount(t, minlength=c + 1),
                              torch.bincount(torch.where(valid, pred, c), minlength=c + 1),
                              torch.bincount(torch.where(valid & (pred == target), target, c), minlength=c + 1)])
        if self._counts is not None and self._counts.shape[1] != counts.shape[1]:   # heads of different sizes
            size = max(self._counts.shape[1], counts.shape[1])       # overflow bins are dropped
            self._counts, counts = (torch.nn.functional.pad(x[:, :-1], (0, size - x.shape[1] + 1))
                                    for x in (self._counts, counts))
        self._counts = counts if self._counts is None else self._counts + counts
        self._classes = max(self._classes, c)
        n = len(target)
        if self._kept < MAX_SAMPLES:
            k = min(n, MAX_SAMPLES - self._kept)
            self._preds.append((pred[:k].clone(), target[:k].clone(), conf[:k].clone(), valid[:k].clone()))
            self._kept += k
        idx = torch.arange(self._seen, self._seen + n, device=out.device)
        x = self._input if self._input is not None and len(self._input) == n else None
        self._keep_worst(p_true, idx, x, pred, target)
        self._seen += n
        return valid.sum()

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

    @property
    def phase_has_graph(self) -> bool:
        return self._phase_grad

    def discard_if_training(self) -> bool:
        """A backward is starting: an open phase whose losses carry a graph was training after
        an eval-mode forward (model.eval() never undone), not an evaluation. Drop it."""
        if self.open and self._phase_grad:
            self.open = False
            self._reset_phase()
            return True
        return False

    def close_phase(self, step: int, train_loss: float | None, train_acc: float | None) -> dict | None:
        """The phase ended (a training step or the end of the run): make its epoch record."""
        if not self.open:
            return None
        self.open = False
        n = int(self._weight)
        total = float(self._loss_sum) if self._loss_sum is not None else float("nan")
        record = {"epoch": len(self.epochs) + 1, "step": step,
                  "val_loss": total / n if n else float("nan"), "val_samples": n,
                  "train_loss": train_loss,
                  "train_acc": train_acc, "model_in_train_mode": self._phase_train_mode and not self._mc_sampling,
                  "mc_sampling": self._mc_sampling}
        if self._counts is not None:
            support, predicted, correct = self._counts[:, :-1].cpu().numpy()
            judged = int(support.sum())
            if judged:
                record["val_acc"] = float(correct.sum() / judged)
                record["val_top_class_share"] = float(predicted.max() / judged)
            record["classes"] = self._classes
            pred, target, conf, valid = (torch.cat(t).cpu().numpy() for t in zip(*self._preds))
            self.last_predictions = {"pred": pred[valid], "target": target[valid], "confidence": conf[valid]}
            self.last_counts = {"support": support, "predicted": predicted, "true_positive": correct}
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


def _class_stats(name: str, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Predicted class, its probability and the probability of ``target`` (in range) per row,
    from logits (cross_entropy) or log-probabilities (nll_loss); in row chunks, so the float
    copy never exceeds CHUNK values (a language model's (B*T, V) logits stay one copy)."""
    rows = max(1, CHUNK // max(1, out.shape[1]))
    preds, confs, trues = [], [], []
    for s in range(0, len(out), rows):
        o = out[s:s + rows].float()
        logp = o.log_softmax(1) if name == "cross_entropy" else o
        top, pred = logp.max(1)
        preds.append(pred)
        confs.append(top.exp())
        trues.append(logp.gather(1, target[s:s + rows].unsqueeze(1)).squeeze(1).exp())
    if len(preds) == 1:
        return preds[0], confs[0], trues[0]
    return torch.cat(preds), torch.cat(confs), torch.cat(trues)


def _thumb(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) downsampled to at most THUMB x THUMB; other inputs up to 256 values."""
    x = x.detach().float()
    if x.dim() == 4 and max(x.shape[-2:]) > THUMB:
        x = torch.nn.functional.adaptive_avg_pool2d(x, (min(THUMB, x.shape[-2]), min(THUMB, x.shape[-1])))
    elif x.dim() != 4:
        x = x.reshape(len(x), -1)[:, :256]
    return x
