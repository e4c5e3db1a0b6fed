"""Data checks on the stream: the checkup's data decisions fed from what a watched run actually
trains and evaluates on, bounded in memory and read on the schedule.

Feeds (device-side, read by the host once per tick):
- every training forward: per-sample fingerprints of the input (one matmul into a preallocated
  buffer), until the inputs come round again or MAX_TRAIN_KEYS samples;
- every training loss call, until there are enough: (input features, label) rows for the
  label-signal probe;
- each sampled training step: the label, predicted and correct-class histograms and the
  per-batch label entropy of the loss call, and per-channel input moments (``bincount`` waits
  for the device on CUDA: on sampled steps only);
- every evaluation loss call: fingerprints and per-channel moments of that batch's input.

The decisions are the checkup's own (``checks.data``: imbalance, shuffling, leakage,
preprocessing mismatch; ``checks.wiring``: batch mixing) plus the label-signal probe below.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from trainmedic.checks.data import (FINGERPRINT_PROJECTIONS as FINGERPRINT_WIDTH, channel_rows,
                                    fingerprint_keys, fingerprints, imbalance_finding,
                                    leakage_finding, mismatch_finding,
                                    unshuffled_finding)
from trainmedic.findings import Finding

MAX_TRAIN_KEYS = 1 << 17        # fingerprinted training samples (then fingerprinting stops)
MAX_EVAL_BATCHES = 256          # evaluation batches kept per phase
MAX_PAIRS = 2048                # (input, label) samples for the probe
MAX_TOKEN_PAIRS = 1 << 16       # (token, next-token) pairs for the probe
PROBE_FEATURES = 256
CLASS_LOSSES = ("cross_entropy", "nll_loss")
BINARY_LOSSES = ("binary_cross_entropy_with_logits", "binary_cross_entropy")
REGRESSION_LOSSES = ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss")
# training that broke explains a network stuck at the no-information loss: not the labels' fault
BROKEN_TRAINING = frozenset({"loss_diverging", "nonfinite_loss", "nonfinite_gradient",
                             "exploding_gradient", "dead_relu"})


class DataStream:
    def __init__(self) -> None:
        self.loss: str | None = None           # the loss the label statistics come from
        self.weighted = False                  # class weights / pos_weight in the loss call
        self.ignore_index = -100
        self._train_fp = _Rows(FINGERPRINT_WIDTH)
        self._train_parts: list[np.ndarray] = []        # host keys, one array per tick
        self._train_unique = np.zeros(0, dtype=np.int64)
        self.train_fingerprinted = 0
        self.covered = False                   # the training inputs came round again (an epoch)
        self._counts: torch.Tensor | None = None       # (3, C+1): labels, predicted, correct
        self._recent: list[torch.Tensor] = []          # the same, for the last sampled batches
        self._entropy: list[torch.Tensor] = []
        self.batch_sizes: list[int] = []
        self.dense_targets = False
        self._moments: torch.Tensor | None = None      # (3, C): count, sum, sum of squares
        self._eval: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        self.eval_batches: list[tuple[np.ndarray | None, np.ndarray | None]] = []   # all phases
        self._fresh_eval = False               # an evaluation phase ended since the last look
        self._pairs: _Rows | None = None       # (input features..., label) rows on the device
        self.pairs_x: list[np.ndarray] = []    # host copies, read once per tick
        self.pairs_y: list[np.ndarray] = []
        self.pair_kind: str | None = None      # "samples" | "tokens"
        self.pair_loss: str | None = None
        self.pairs_taken = 0
        self.probe: dict[str, Any] | None = None
        self._probed_with = 0
        self.decided: set[str] = set()
        self.val_predictions: dict[str, np.ndarray] | None = None   # the last validation pass

    # -- feeds ------------------------------------------------------------------------------------
    def on_train_forward(self, x: Any) -> None:
        """Every training forward, until the inputs come round again (or MAX_TRAIN_KEYS):
        fingerprint the samples (one matmul into a preallocated buffer). Float inputs only:
        windows of token ids repeat across any split of natural text."""
        if not self.covered and self.train_fingerprinted < MAX_TRAIN_KEYS and _fingerprintable(x):
            out = self._train_fp.slot(len(x), x.device)
            if out is not None:
                fingerprints(x, out=out)
            self.train_fingerprinted += len(x)

    def on_train_loss(self, name: str, out: torch.Tensor, target: Any, kwargs: dict,
                      model_input: Any) -> None:
        """A sampled training step's loss call: labels, predictions, inputs (device-side; the
        host reads them at the tick)."""
        if torch.is_tensor(model_input) and model_input.is_floating_point() and model_input.dim() >= 2:
            rows = channel_rows(model_input)
            m = torch.stack([torch.full_like(rows[0], len(rows)), rows.sum(0), rows.pow(2).sum(0)])
            m = m.double() if m.device.type != "mps" else m          # MPS has no float64
            same = self._moments is not None and self._moments.shape == m.shape
            self._moments = self._moments + m.to(self._moments.device) if same else m
        if not torch.is_tensor(target) or not torch.is_tensor(out) or target.dim() == 0:
            return
        labels = self._labels(name, out, target, int(kwargs.get("ignore_index", -100)))
        if labels is None:
            return
        y, pred, classes = labels
        if self.loss != name:
            self._counts, self._recent, self._entropy, self.batch_sizes = None, [], [], []
        self.loss = name
        self.weighted = kwargs.get("weight") is not None or kwargs.get("pos_weight") is not None
        self.ignore_index = int(kwargs.get("ignore_index", -100))
        # invalid labels go to an overflow bin (index ``classes``): no boolean indexing, no sync
        bins = classes + 1
        counts = torch.stack([torch.bincount(y, minlength=bins)[:bins],
                              torch.bincount(torch.where(y < classes, pred, classes), minlength=bins)[:bins],
                              torch.bincount(torch.where(pred == y, y, classes), minlength=bins)[:bins]])
        fits = self._counts is not None and self._counts.shape == counts.shape
        self._counts = self._counts + counts if fits else counts
        self._recent = (self._recent + [counts])[-3:]
        p = counts[0, :classes].float() / counts[0, :classes].sum().clamp_min(1)
        self._entropy = (self._entropy + [-(p * p.clamp_min(1e-30).log()).sum()])[-64:]
        self.batch_sizes = (self.batch_sizes + [int(y.numel())])[-64:]
        self.dense_targets = target.dim() > 1

    def label_counts(self):
        """Sampled training labels per class (a numpy array), or None before any were seen."""
        return None if self._counts is None else self._counts[0, :-1].cpu().numpy()

    @staticmethod
    def _labels(name: str, out: torch.Tensor, target: torch.Tensor, ignore: int):
        """(labels, predictions, classes) of a single-label classification loss call, labels
        outside [0, classes) (ignored ones, soft BCE targets) mapped to ``classes``."""
        out = out.detach()
        if name in CLASS_LOSSES and not target.is_floating_point() and out.dim() >= 2 \
                and target.numel() * out.shape[1] == out.numel():
            classes = int(out.shape[1])
            y = target.detach().reshape(-1).long()
            pred = out.argmax(1).reshape(-1)
            return torch.where((y >= 0) & (y < classes) & (y != ignore), y, classes), pred, classes
        if name in BINARY_LOSSES and target.numel() == out.numel() and out.dim() <= 2 \
                and (out.dim() < 2 or out.shape[-1] == 1):          # not multi-label
            y = target.detach().reshape(-1)
            hard = (y == 0) | (y == 1)
            pred = (out.reshape(-1) > (0 if name == BINARY_LOSSES[0] else 0.5)).long()
            return torch.where(hard, y.long(), 2), pred, 2
        return None

    @property
    def wants_pairs(self) -> bool:
        return self.pairs_taken < (MAX_TOKEN_PAIRS if self.pair_kind == "tokens" else MAX_PAIRS)

    def keep_pair(self, name: str, target: Any, kwargs: dict, x: Any) -> None:
        """A training loss call: copy (model input features, label) rows for the probe into
        device buffers, until there are enough. The pairs come from one loss function."""
        if not torch.is_tensor(x) or not torch.is_tensor(target) or target.dim() == 0 \
                or x.dim() == 0 or not len(target) or self.pair_loss not in (None, name):
            return
        if not x.is_floating_point() and x.dim() == 2 and target.numel() == x.numel() \
                and name in CLASS_LOSSES:
            kind = "tokens"
        elif x.dim() >= 2 and len(target) == len(x) and target[0].numel() == 1:
            kind = "samples"
        else:
            return
        if self.pair_kind not in (None, kind):
            return
        target = target.detach().to(x.device)
        if kind == "tokens":
            rows = torch.stack([x.detach().reshape(-1), target.reshape(-1)], 1).float()
        else:
            rows = torch.cat([_probe_features(x), target.reshape(len(target), 1).float()], 1)
        if self._pairs is None:
            self._pairs = _Rows(rows.shape[1], chunk=8192 if kind == "tokens" else MAX_PAIRS)
        if rows.shape[1] != self._pairs.width:      # inputs changed shape: keep what we have
            self.pairs_taken = MAX_TOKEN_PAIRS
            return
        self.pair_kind, self.pair_loss = kind, name
        self.ignore_index = int(kwargs.get("ignore_index", -100))
        self._pairs.append(rows)
        self.pairs_taken += len(rows)

    def on_eval_batch(self, x: Any) -> None:
        """An evaluation loss call: fingerprints and per-channel moments of its input."""
        if not torch.is_tensor(x) or x.dim() < 2 or len(self._eval) >= MAX_EVAL_BATCHES:
            return
        fp = fingerprints(x) if _fingerprintable(x) else None
        moments = None
        if x.is_floating_point():
            rows = channel_rows(x)
            moments = torch.stack([torch.full_like(rows[0], len(rows)), rows.sum(0), rows.pow(2).sum(0)])
        self._eval.append((fp, moments))

    def close_eval_phase(self) -> None:
        """The evaluation phase ended: its batches join the ones judged (at most
        MAX_EVAL_BATCHES over the run)."""
        room = MAX_EVAL_BATCHES - len(self.eval_batches)
        self.eval_batches += [(None if fp is None else fingerprint_keys(fp.float().cpu().numpy()),
                               None if m is None else m.double().cpu().numpy()) for fp, m in self._eval[:room]]
        self._fresh_eval |= bool(self._eval)
        self._eval = []

    # -- host read, once per tick ------------------------------------------------------------------
    def take(self) -> None:
        fp = self._train_fp.take()
        if fp is not None:
            keys = fingerprint_keys(fp)
            keys = keys[keys >= 0]
            if len(keys) and len(self._train_unique) and np.isin(keys, self._train_unique).mean() >= 0.9:
                self.covered = True             # an epoch went by: every training sample is known
            self._train_unique = np.union1d(self._train_unique, keys)
        rows = self._pairs.take() if self._pairs is not None else None
        if rows is None:
            return
        if self.pair_kind == "tokens":
            rows = rows.astype(np.int64)
            rows = rows[rows[:, 1] != self.ignore_index]
        self.pairs_x.append(rows[:, :-1] if self.pair_kind != "tokens" else rows[:, 0])
        self.pairs_y.append(rows[:, -1])

    # -- decisions ---------------------------------------------------------------------------------
    def findings(self, run, model_loss: np.ndarray, final: bool = False,
                 active: "set[str] | frozenset[str]" = frozenset()) -> list[Finding]:
        """New findings from everything streamed so far (each id at most once per run). The
        evaluation data is judged when an evaluation phase ended (and at the end). ``active``:
        the ids of the run's active findings."""
        out: list[Finding] = []
        judge_eval, self._fresh_eval = self._fresh_eval or final, False
        for fid, judge in (("class_imbalance", self._imbalance), ("unshuffled_data", self._unshuffled),
                           ("train_val_leakage", lambda: self._leakage(final)),
                           ("preprocessing_mismatch", self._mismatch),
                           ("label_noise", lambda: self._label_signal(run, model_loss, active))):
            if fid in self.decided or (fid in ("train_val_leakage", "preprocessing_mismatch")
                                       and not judge_eval):
                continue
            found = judge()
            if found:
                self.decided.add(fid)
                out += found
        return out

    def _imbalance(self):
        """The labels are dominated by one class and the model answers with it: on the last
        sampled training batches (>= 95% of the predictions, recall of the other classes
        <= 10%), or on validation (at least half of the predictions and twice the class's
        share there: many samples of other classes are answered with it)."""
        if self._counts is None or not self._recent:
            return None
        counts = self._counts.cpu().numpy()[:, :-1]
        labels = counts[0]
        if labels.sum() < 50:
            return None
        top = int(labels.argmax())
        recent = torch.stack(self._recent).sum(0).cpu().numpy()[:, :-1]
        others = np.arange(len(labels)) != top
        share = float(recent[1, top] / max(recent[1].sum(), 1))
        missed = recent[2, others].sum() <= 0.1 * max(recent[0, others].sum(), 1)
        val = self.val_predictions
        if val is not None and len(val["pred"]):
            val_share = float((val["pred"] == top).mean())
            if val_share >= 0.5 and val_share >= 2 * float((val["target"] == top).mean()):
                share, missed = max(share, 0.95, float(labels[top] / labels.sum())), True
        if not missed:
            return None
        return imbalance_finding(labels, "pixels" if self.dense_targets else "samples",
                                 predicted_share=share, weighted=self.weighted)

    def _unshuffled(self):
        if self._counts is None or len(self._entropy) < 3 or self.dense_targets:
            return None
        labels = self._counts[0, :-1].cpu().numpy()
        per_batch = float(torch.stack(self._entropy).mean())
        return unshuffled_finding(labels, per_batch, int(np.median(self.batch_sizes)))

    def _leakage(self, final: bool):
        """Judged once every training sample was fingerprinted (they came round again). Every
        evaluation batch being training data is only said at the end, from all evaluation
        phases (an evaluation on the training set beside a test set used last is fine)."""
        batches = [k for k, _ in self.eval_batches if k is not None]
        if not self.covered or not batches:
            return None
        found = leakage_finding(self._train_unique, batches)
        if found and found[0].evidence["share"] >= 1.0 and not final:
            return None
        return found

    def _mismatch(self):
        """Evaluation inputs (pooled over the evaluation batches that are not training data)
        against the training inputs, per channel."""
        if self._moments is None:
            return None
        n, s, ss = self._moments.cpu().numpy()
        own = [m for k, m in self.eval_batches if m is not None and m.shape[1] == len(n)
               and not _train_like(k, self._train_unique)]
        if not own:
            return None
        vn, vs, vss = np.sum(own, axis=0)
        mt, mv = s / n, vs / vn
        st, sv = np.sqrt(np.maximum(ss / n - mt ** 2, 0)), np.sqrt(np.maximum(vss / vn - mv ** 2, 0))
        return mismatch_finding(mt, st, mv, sv, batches=f" ({len(own)} evaluation batches)")

    def _label_signal(self, run, model_loss: np.ndarray, active):
        """Labels that carry no signal: a simple probe on the sampled (input, label) pairs finds
        nothing to predict, and the network's own loss sits flat at the labels'
        no-information level, with no broken training (``BROKEN_TRAINING``) to explain it."""
        if (run.step < 100 or len(model_loss) < 100 or run.adversarial or self.weighted
                or BROKEN_TRAINING & set(active)):
            return None          # (a class-weighted loss has another no-information level)
        pairs = sum(len(a) for a in self.pairs_x)
        if pairs >= 2 * self._probed_with:                   # more data: probe again
            self.probe = label_probe(self.pair_kind, self.pairs_x, self.pairs_y, self.pair_loss)
            self._probed_with = max(pairs, 1)
        probe = self.probe
        if probe is None or probe["signal"] or probe["no_information_loss"] is None:
            return None
        level = probe["no_information_loss"]
        half = model_loss[len(model_loss) // 2:]
        current = float(np.median(half[len(half) // 2:]))
        before = float(np.median(half[:len(half) // 2]))
        if level < 0.05 or current < 0.9 * level or current < 0.97 * before:
            return None                 # constant labels, or the network is learning something
        return [Finding.make(
            "label_noise",
            f"The labels carry no signal that a simple model can find in the inputs: a "
            f"{probe['method']} on {probe['samples']} sampled {self.pair_kind} scores "
            f"{probe['score']:.4g} against {probe['baseline']:.4g} for guessing, and the network's loss "
            f"({current:.4g}) sits flat at the labels' no-information level ({level:.4g}). Inputs and "
            f"labels are probably misaligned (shuffled separately, taken from another sample).",
            where="labels", evidence={**probe, "model_loss": current})]


def _fingerprintable(x: Any) -> bool:
    return torch.is_tensor(x) and x.is_floating_point() and x.dim() >= 2 and len(x) > 0 \
        and x.numel() // len(x) >= 2


def _train_like(keys: np.ndarray | None, train_keys: np.ndarray) -> bool:
    """An evaluation batch made of training samples (an evaluation on the training set)."""
    if keys is None or not len(train_keys):
        return False
    k = keys[keys >= 0]
    return bool(len(k)) and np.isin(k, train_keys).mean() >= 0.9


class _Rows:
    """Rows written on the device into preallocated chunks (nothing allocated per step
    outlives the step), read by the host in one copy per tick."""

    def __init__(self, width: int, chunk: int = 8192) -> None:
        self.width, self.rows = width, chunk
        self.full: list[torch.Tensor] = []          # the filled parts of earlier chunks
        self.chunk: torch.Tensor | None = None
        self.fill = 0

    def slot(self, n: int, device: torch.device) -> torch.Tensor | None:
        """``n`` free rows on ``device`` to write into (a new chunk when this one lacks room)."""
        if n > self.rows:
            return None
        if self.chunk is None or self.fill + n > self.rows or self.chunk.device != device:
            if self.chunk is not None and self.fill:
                self.full.append(self.chunk[:self.fill])
            self.chunk, self.fill = torch.empty(self.rows, self.width, device=device), 0
        self.fill += n
        return self.chunk[self.fill - n:self.fill]

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach().float()
        for start in range(0, len(rows), self.rows):
            part = rows[start:start + self.rows]
            self.slot(len(part), part.device).copy_(part)

    def take(self) -> np.ndarray | None:
        parts = self.full + ([self.chunk[:self.fill]] if self.chunk is not None and self.fill else [])
        self.full, self.chunk, self.fill = [], None, 0
        return np.concatenate([p.cpu().numpy() for p in parts]) if parts else None


def _probe_features(x: torch.Tensor) -> torch.Tensor:
    """At most PROBE_FEATURES features per sample, on the device: images average-pooled,
    token ids as a hashed bag of tokens, anything else flattened and strided."""
    x = x.detach()
    if not x.is_floating_point():
        ids = x.reshape(len(x), -1).long() % PROBE_FEATURES
        return torch.zeros(len(x), PROBE_FEATURES, device=x.device).scatter_add_(
            1, ids, torch.ones_like(ids, dtype=torch.float))
    x = x.float()
    if x.dim() == 4:
        c = x.shape[1]
        side = max(1, int(math.sqrt(PROBE_FEATURES / c)))
        x = torch.nn.functional.adaptive_avg_pool2d(x, (min(side, x.shape[2]), min(side, x.shape[3])))
    flat = x.reshape(len(x), -1)
    if flat.shape[1] > PROBE_FEATURES:
        flat = flat[:, ::math.ceil(flat.shape[1] / PROBE_FEATURES)]
    return flat


def label_probe(kind: str | None, xs: list[np.ndarray], ys: list[np.ndarray],
                loss: str | None) -> dict[str, Any] | None:
    """Held-out score of simple predictors of the label from the input, against guessing.

    Token pairs (language models): a bigram table (next token from the current one) vs the
    unigram distribution, in cross-entropy. Samples: the better of 1-nearest-neighbour and
    nearest class mean on standardised features vs the majority class (classification), or
    ridge regression / k-NN R^2 vs the mean (regression). ``signal`` is whether the probe beats
    guessing clearly (three standard errors)."""
    if not xs or kind is None or loss is None:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    if kind == "tokens":
        return _bigram_probe(x, y) if len(x) >= 2000 else None
    _, first = np.unique(x, axis=0, return_index=True)      # a sample seen in several epochs
    x, y = x[np.sort(first)], y[np.sort(first)]             # counts once (no memorised pairs)
    if len(x) < 256:
        return None
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    half = len(x) // 2
    mu, sd = x[:half].mean(0), x[:half].std(0) + 1e-6
    z = torch.from_numpy((x - mu) / sd).float()
    if loss in REGRESSION_LOSSES:
        return _regression_probe(z, y, half, loss)
    return _class_probe(z, y.astype(np.int64), half, loss)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _bigram_probe(x: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    if np.bincount(x).max() >= 0.5 * len(x):
        return None          # one input token stands for most labels: a [MASK] (masked LM)
    half = len(x) // 2
    vocab = int(max(x.max(), y.max())) + 1
    # counts from the first half, cross-entropy on the second, add-one smoothing on both
    uni = np.bincount(y[:half], minlength=vocab) + 1.0
    uni_ce = float(-np.log(uni[y[half:]] / uni.sum()).mean())
    key = x[:half] * vocab + y[:half]
    pairs, counts = np.unique(key, return_counts=True)
    ctx = np.bincount(x[:half], minlength=vocab).astype(float)
    test = x[half:] * vocab + y[half:]
    pos = np.searchsorted(pairs, test)
    pos = np.minimum(pos, len(pairs) - 1)
    hit = np.where(pairs[pos] == test, counts[pos], 0)
    prob = (hit + uni[y[half:]] / uni.sum() * 10) / (ctx[x[half:]] + 10)   # back off to unigram
    bi_ce = float(-np.log(prob).mean())
    se = float(np.std(-np.log(prob)) / math.sqrt(len(prob)))
    return {"method": "bigram table", "samples": int(len(x)), "score": bi_ce, "baseline": uni_ce,
            "signal": bool(bi_ce < uni_ce - max(0.02, 3 * se)),
            "no_information_loss": _entropy(np.bincount(y, minlength=vocab).astype(float))}


def _class_probe(z: torch.Tensor, y: np.ndarray, half: int, loss: str) -> dict[str, Any]:
    yt = torch.from_numpy(y)
    train, test = slice(0, half), slice(half, None)
    d = torch.cdist(z[test], z[train])
    nn1 = yt[train][d.argmin(1)]
    classes = int(y.max()) + 1
    means = torch.stack([z[train][yt[train] == c].mean(0) if (yt[train] == c).any()
                         else torch.full((z.shape[1],), float("inf")) for c in range(classes)])
    centroid = torch.cdist(z[test], means).argmin(1)
    acc = max(float((nn1 == yt[test]).float().mean()), float((centroid == yt[test]).float().mean()))
    counts = np.bincount(y[:half], minlength=classes)
    base = float((y[half:] == counts.argmax()).mean())
    n = len(y) - half
    se = math.sqrt(max(base * (1 - base), 1e-4) / n)
    # on imbalanced labels accuracy hardly moves above the majority class: balanced accuracy
    # (mean per-class recall; 1/C for guessing) sees a probe that finds the rare classes
    present = [c for c in range(classes) if (yt[test] == c).sum() >= 5]
    balanced, chance = 0.0, 1.0
    if len(present) >= 2:
        balanced = max(float(np.mean([float((p[yt[test] == c] == c).float().mean()) for c in present]))
                       for p in (nn1, centroid))
        chance = 1 / len(present)
        smallest = min(int((yt[test] == c).sum()) for c in present)
        balanced_signal = balanced > chance + 3 * math.sqrt(chance * (1 - chance) / smallest) + 0.02
    else:
        balanced_signal = False
    full = np.bincount(y, minlength=classes).astype(float)
    info = _entropy(full)
    return {"method": "nearest-neighbour / class-mean probe", "samples": int(len(y)),
            "score": acc, "baseline": base, "balanced_accuracy": balanced, "balanced_chance": chance,
            "signal": bool(acc > base + 3 * se + 0.02 or balanced_signal),
            "no_information_loss": info if loss in CLASS_LOSSES + BINARY_LOSSES else None}


def _regression_probe(z: torch.Tensor, y: np.ndarray, half: int, loss: str) -> dict[str, Any]:
    yt = torch.from_numpy(y).double()
    zt = torch.cat([z.double(), torch.ones(len(z), 1, dtype=torch.float64)], 1)
    a, b = zt[:half], zt[half:]
    w = torch.linalg.solve(a.T @ a + 1.0 * torch.eye(a.shape[1], dtype=torch.float64), a.T @ yt[:half])
    var = float(((yt[half:] - yt[:half].mean()) ** 2).mean()) + 1e-12
    r2_lin = 1 - float(((b @ w - yt[half:]) ** 2).mean()) / var
    d = torch.cdist(z[half:], z[:half])
    knn = yt[:half][d.topk(5, largest=False).indices].mean(1)
    r2_knn = 1 - float(((knn - yt[half:]) ** 2).mean()) / var
    score = max(r2_lin, r2_knn)
    n = len(y) - half
    return {"method": "ridge / 5-NN regression probe (R^2)", "samples": int(len(y)), "score": score,
            "baseline": 0.0, "signal": bool(score > max(0.05, 3 / math.sqrt(n))),
            "no_information_loss": float(np.var(y)) if loss == "mse_loss" else None}
