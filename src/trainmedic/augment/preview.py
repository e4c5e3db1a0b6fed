"""What the model is fed: a PNG grid of samples above their augmented versions, for a notebook
(``IPython.display.Image(preview(...))``), a file, or the run's HTML report
(:meth:`trainmedic.Monitor.preview_augmentation`)."""

from __future__ import annotations

import base64
import inspect
import io
import math
import os
from typing import Any, Callable

import numpy as np
import torch

from trainmedic.augment._common import check_int
from trainmedic.integrations import require

COLUMNS = 8
KINDS = {4: "image", 3: "spectrogram", 2: "signal"}


def takes_targets(augment: Callable[..., Any]) -> bool:
    """``augment`` has two positional parameters without defaults: ``augment(x, y)`` (MixUp)."""
    try:
        params = inspect.signature(augment).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional and p.default is p.empty for p in params) >= 2


def preview(augment: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None = None, *, n: int = 16,
            path: "str | os.PathLike[str] | None" = None) -> bytes:
    """The first ``n`` samples of ``x`` (images ``(B, C, H, W)``, spectrograms ``(B, F, T)`` or
    signals ``(B, T)``) above ``augment``'s output for them, as PNG bytes, also written to
    ``path`` when given. ``augment(x)`` returns the augmented batch; with ``y``, the titles show
    the labels, and a function taking ``(x, y)`` (:func:`~trainmedic.augment.mixup`) is called so
    and returns ``(inputs, targets)``: soft targets are shown as their two largest classes."""
    n = check_int("n", n, 1)
    if not isinstance(x, torch.Tensor) or x.ndim not in KINDS or len(x) == 0:
        raise ValueError(f"x has shape {tuple(getattr(x, 'shape', ()))}; expected a non-empty batch of images "
                         f"(B, C, H, W), spectrograms (B, F, T) or signals (B, T)")
    if y is not None and (not isinstance(y, torch.Tensor) or len(y) != len(x)):
        raise ValueError(f"y has {len(y) if hasattr(y, '__len__') else y!r} labels for {len(x)} samples; "
                         f"expected a tensor with one label per sample")
    x, y = x[:n], None if y is None else y[:n]
    with torch.no_grad():
        if takes_targets(augment):
            if y is None:
                raise ValueError("augment takes (x, y) and returns (inputs, targets); pass y")
            out, y_out = augment(x, y)
        else:
            out, y_out = augment(x), y
    if not isinstance(out, torch.Tensor) or len(out) != len(x):
        raise ValueError(f"augment returned {type(out).__name__} {tuple(getattr(out, 'shape', ()))}; "
                         f"expected a batch of {len(x)} samples")
    png = _draw(KINDS[x.ndim], _numpy(x), _numpy(out), _titles(y), _titles(y_out))
    if path is not None:
        with open(path, "wb") as f:
            f.write(png)
    return png


def report_section(augment: Callable[..., Any], x: torch.Tensor, y: torch.Tensor | None = None,
                   n: int = 16) -> dict[str, Any]:
    """The report's ``augmentation`` entry: the function's name and its preview as a data URI."""
    png = preview(augment, x, y, n=n)
    name = getattr(augment, "__name__", None) or getattr(getattr(augment, "func", None), "__name__", None)
    return {"function": name or type(augment).__name__, "samples": min(n, len(x)),
            "preview": "data:image/png;base64," + base64.b64encode(png).decode()}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def _titles(y: torch.Tensor | None) -> list[str] | None:
    """A title per label: the class, or the two largest classes of a soft target row."""
    if y is None:
        return None
    if y.ndim == 1:
        return [str(v) for v in y.tolist()]
    titles = []
    for row in _numpy(y).reshape(len(y), -1):
        top = [k for k in np.argsort(-row, kind="stable")[:2] if row[k] >= 0.005]
        titles.append(" ".join(f"{k}:{row[k]:.2f}" for k in top))
    return titles


def _draw(kind: str, before: np.ndarray, after: np.ndarray, titles: list[str] | None,
          new_titles: list[str] | None) -> bytes:
    """Rows of up to COLUMNS samples, each row of originals followed by the augmented row."""
    require("matplotlib", "report")
    from matplotlib.figure import Figure

    k = len(before)
    cols = min(k, COLUMNS)
    groups = math.ceil(k / cols)
    width, height = (1.3, 1.5) if kind == "image" else (2.2, 1.5)
    fig = Figure(figsize=(cols * width, 2 * groups * height), dpi=80)
    axes = fig.subplots(2 * groups, cols, squeeze=False)
    lo, hi = min(0.0, float(before.min())), max(1.0, float(before.max()))       # images: one scale
    for i in range(2 * groups * cols):
        ax = axes[i // cols, i % cols]
        ax.set_xticks([])
        ax.set_yticks([])
        group, row, col = i // (2 * cols), i // cols % 2, i % cols
        s = group * cols + col
        if s >= k:
            ax.set_axis_off()
            continue
        sample = (after if row else before)[s]
        names = new_titles if row else titles
        if kind == "image":
            img = sample.transpose(1, 2, 0) if sample.shape[0] == 3 else sample[0]
            ax.imshow(((img - lo) / (hi - lo)).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        elif kind == "spectrogram":
            ax.imshow(sample, origin="lower", aspect="auto", vmin=before[s].min(), vmax=before[s].max())
        else:
            ax.plot(sample, lw=0.5)
            ax.set_ylim(min(before[s].min(), after[s].min()), max(before[s].max(), after[s].max()) + 1e-12)
        if names is not None:
            ax.set_title(names[s], fontsize=7)
        if col == 0:
            ax.set_ylabel("augmented" if row else "original", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
