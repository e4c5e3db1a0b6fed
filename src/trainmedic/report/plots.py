"""Figures for the HTML report, drawn with matplotlib (Agg) and returned as PNG data URIs, so
the page needs no network. Each function returns None when there is nothing to draw."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

MAX_POINTS = 2000          # curves are thinned to this many points


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _fig(w: float = 8, h: float = 3):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(w, h), dpi=80)
    return plt, fig, ax


def _uri(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _num(v: Any) -> float | None:
    """A finite number from a JSON value ("nan"/"inf" strings and nulls give None)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, len(x) // MAX_POINTS)
    return x[::step], y[::step]


def loss_curve(ticks: list[dict], epochs: list[dict], repairs: list[dict] = ()) -> str | None:
    steps, losses = [], []
    for t in ticks:
        for i, v in enumerate(t.get("losses") or []):
            if _num(v) is not None:
                steps.append(t["first_step"] + i)
                losses.append(_num(v))
    val = [(e["step"], _num(e.get("val_loss"))) for e in epochs if _num(e.get("val_loss")) is not None]
    if not losses and not val:
        return None
    plt, fig, ax = _fig()
    if losses:
        s, v = _thin(np.array(steps), np.array(losses))
        ax.plot(s, v, lw=0.6, alpha=0.5, label="train (per step)")
        w = max(1, len(losses) // 50)
        if len(losses) > w:
            smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
            ax.plot(np.array(steps)[w - 1:][::max(1, len(smooth) // MAX_POINTS)],
                    smooth[::max(1, len(smooth) // MAX_POINTS)], lw=1.5, label=f"train (mean of {w})")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation (per epoch)")
    if losses and max(losses) > 50 * max(min(losses), 1e-12):
        ax.set_yscale("log")
    for r in repairs:                  # a rollback: the curve after it is the repaired run's
        if r.get("outcome") == "skipped":
            continue
        color = {"kept": "tab:green", "failed": "tab:red"}.get(r.get("outcome"), "tab:gray")
        ax.axvline(r["step"], color=color, lw=1, ls="--")
        ax.annotate(f"{r['remedy']} ({r.get('outcome')})", (r["step"], 1), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=7, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    return _uri(plt, fig)


def metric_curve(epochs: list[dict], keys: tuple[str, ...] = ("train_acc", "val_acc")) -> str | None:
    series = {k: [(e["epoch"], _num(e.get(k))) for e in epochs if _num(e.get(k)) is not None] for k in keys}
    if not any(series.values()):
        return None
    plt, fig, ax = _fig(8, 2.6)
    for k, pts in series.items():
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, label=k)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    return _uri(plt, fig)


def lr_curve(ticks: list[dict]) -> str | None:
    pts = [(t["step"], _num(t.get("lr"))) for t in ticks if _num(t.get("lr")) is not None]
    if len(pts) < 2:
        return None
    plt, fig, ax = _fig(8, 2.2)
    ax.plot(*zip(*pts), lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    return _uri(plt, fig)


def _layer_matrix(ticks: list[dict], key: str) -> tuple[list[str], np.ndarray, list[int]]:
    names: list[str] = []
    for t in ticks:
        for name, v in (t.get("layers") or {}).items():
            if key in v and name not in names:
                names.append(name)
    m = np.full((len(names), len(ticks)), np.nan)
    for j, t in enumerate(ticks):
        for i, name in enumerate(names):
            v = _num((t.get("layers") or {}).get(name, {}).get(key))
            if v is not None and v > 0:
                m[i, j] = v
    return names, m, [t["step"] for t in ticks]


def grad_heatmap(ticks: list[dict]) -> str | None:
    names, m, steps = _layer_matrix(ticks, "grad")
    if not names or np.isnan(m).all():
        return None
    plt, fig, ax = _fig(8, 0.6 + 0.25 * len(names))
    im = ax.imshow(np.log10(m), aspect="auto", cmap="viridis", interpolation="nearest",
                   extent=(steps[0], steps[-1], len(names) - 0.5, -0.5))
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("step")
    fig.colorbar(im, ax=ax, label="log10 |grad|")
    return _uri(plt, fig)


def update_ratios(ticks: list[dict]) -> str | None:
    names, m, steps = _layer_matrix(ticks, "update")
    if not names or np.isnan(m).all():
        return None
    plt, fig, ax = _fig(8, 3)
    for i, name in enumerate(names[:12]):
        ok = ~np.isnan(m[i])
        ax.plot(np.array(steps)[ok], m[i][ok], lw=1, label=name)
    ax.axhline(1e-3, color="grey", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|update| / |weight|")
    ax.legend(fontsize=6, ncol=3)
    return _uri(plt, fig)


def activation_histograms(ticks: list[dict], limit: int = 6) -> list[tuple[str, str]]:
    """fastai's "colorful dimension": per site, the activation histogram (log counts) over time."""
    sites: dict[str, list[tuple[int, list[float], list[float]]]] = {}
    for t in ticks:
        for site, a in (t.get("activations") or {}).items():
            if a.get("hist") and all(_num(v) is not None for v in a["hist"]):
                sites.setdefault(site, []).append((t["step"], a["hist"], a.get("hist_range", [0, 1])))
    out = []
    for site, rows in list(sites.items())[:limit]:
        m = np.log1p(np.array([r[1] for r in rows]).T * 1000)
        lo, hi = rows[0][2]
        plt, fig, ax = _fig(4, 2.2)
        ax.imshow(m, aspect="auto", origin="lower", cmap="magma",
                  extent=(rows[0][0], rows[-1][0], lo, hi))
        ax.set_title(site, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("activation", fontsize=7)
        out.append((site, _uri(plt, fig)))
    return out


def activation_fractions(ticks: list[dict]) -> str | None:
    series: dict[str, list[tuple[int, float]]] = {}
    for t in ticks:
        for site, a in (t.get("activations") or {}).items():
            for key in ("dead_fraction", "saturated_fraction"):
                if _num(a.get(key)) is not None:
                    series.setdefault(f"{site} {key.split('_')[0]}", []).append((t["step"], _num(a[key])))
    if not series:
        return None
    plt, fig, ax = _fig(8, 2.6)
    for name, pts in list(series.items())[:12]:
        ax.plot(*zip(*pts), lw=1, label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=6, ncol=2)
    return _uri(plt, fig)


def lr_range(details: dict[str, Any]) -> str | None:
    curve = (details or {}).get("curve")
    if not curve:
        return None
    plt, fig, ax = _fig(6, 2.6)
    ax.plot(curve["lr"], curve["loss"], lw=1.2)
    ax.set_xscale("log")
    for key, style in (("suggested", "g--"), ("your_lr", "r:")):
        if details.get(key):
            ax.axvline(details[key], color=style[0], ls=style[1:], label=f"{key} {details[key]:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.legend(fontsize=8)
    return _uri(plt, fig)


MAX_CONFUSION_FIGURE = 50    # more classes: the page shows a table of the most-confused pairs


def confusion(matrix: list[list[int]] | None) -> str | None:
    """The dense confusion matrix as a figure, for at most MAX_CONFUSION_FIGURE classes (the
    report carries a dense matrix only for few classes anyway)."""
    if not matrix or len(matrix) > MAX_CONFUSION_FIGURE:
        return None
    m = np.array(matrix)
    if m.size == 0 or m.ndim != 2:
        return None
    plt, fig, ax = _fig(4, 3.6)
    ax.imshow(m, cmap="Blues")
    if len(m) <= 12:
        for i in range(len(m)):
            for j in range(len(m)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _uri(plt, fig)


def pr_curve(pr: dict[str, Any] | None) -> str | None:
    if not pr:
        return None
    plt, fig, ax = _fig(4, 3)
    ax.plot(pr["recall"], pr["precision"])
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"class {pr['positive_class']}, AP {pr['average_precision']:.3f}", fontsize=8)
    return _uri(plt, fig)


def thumbnails(worst: dict[str, Any] | None) -> str | None:
    """The worst mistakes' inputs as small images (when they look like images)."""
    if not worst or not worst.get("inputs"):
        return None
    x = np.array(worst["inputs"], dtype=float)
    if x.ndim == 2:
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            return None
        x = x.reshape(len(x), 1, side, side)
    if x.ndim != 4:
        return None
    plt = _pyplot()
    fig = plt.figure(figsize=(1.3 * len(x), 1.6), dpi=80)
    for k in range(len(x)):
        ax = fig.add_subplot(1, len(x), k + 1)
        img = x[k].transpose(1, 2, 0) if x.shape[1] in (3, 4) else x[k, 0]
        img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        p = _num(worst["p_true"][k])
        ax.set_title(f"{worst['target'][k]}→{worst['predicted'][k]}\np={'?' if p is None else f'{p:.2f}'}",
                     fontsize=6)
        ax.axis("off")
    return _uri(plt, fig)


def learning_curve(curve: dict[str, Any] | None) -> str | None:
    if not curve or not curve.get("points"):
        return None
    pts = curve["points"]
    plt, fig, ax = _fig(6, 2.6)
    ax.plot([p["samples"] for p in pts], [p["train_error"] for p in pts], "o-", label="train")
    ax.plot([p["samples"] for p in pts], [p["val_error"] for p in pts], "o-", label="validation")
    ax.set_xlabel("training samples")
    ax.set_ylabel(curve.get("error", "error"))
    ax.legend(fontsize=8)
    return _uri(plt, fig)
