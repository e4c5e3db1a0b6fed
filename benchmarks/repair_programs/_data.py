"""Data for the repair programs: scikit-learn's bundled data sets (no downloads), split with a
fixed seed and standardised with the training statistics unless ``raw`` is asked for."""

import torch


def _split(x, y, n_train, seed):
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, va = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[va], y[va]


def _standardise(xtr, xva):
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    return (xtr - mean) / std, (xva - mean) / std


def digits(raw=False, seed=0):
    """8x8 digit images as 64 features, 10 classes: 1400 training, 397 validation samples."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    xtr, ytr, xva, yva = _split(x, torch.tensor(d.target), 1400, seed)
    if raw:
        return xtr, ytr, xva, yva
    mean, std = xtr.mean(), xtr.std()          # one scale for all pixels (blank borders)
    return (xtr - mean) / std, ytr, (xva - mean) / std, yva


def breast_cancer(raw=False, seed=0):
    """30 tabular features, binary labels (float 0/1): 450 training, 119 validation samples."""
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)
    xtr, ytr, xva, yva = _split(x, torch.tensor(d.target, dtype=torch.float32), 450, seed)
    if not raw:
        xtr, xva = _standardise(xtr, xva)
    return xtr, ytr, xva, yva


def diabetes(seed=0):
    """10 standardised features, a standardised regression target: 350 training, 92 validation."""
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32)
    xtr, ytr, xva, yva = _split(x, y, 350, seed)
    xtr, xva = _standardise(xtr, xva)
    mean, std = ytr.mean(), ytr.std()
    return xtr, (ytr - mean) / std, xva, (yva - mean) / std
