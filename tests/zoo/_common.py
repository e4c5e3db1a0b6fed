"""Shared data and loops for the zoo programs: small, seeded, CPU, a few seconds each.

Every zoo program is a plain PyTorch script (``python prog.py`` works without trainmedic) whose
``main(watch=None)`` accepts trainmedic.watch for the in-process tests and returns the monitor.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def digits(flat=False, scale=True, seed=0):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)
    if scale:
        x = (x / 16.0 - 0.3) / 0.4
    x = x.reshape(len(x), -1) if flat else x.unsqueeze(1)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    tr, va = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[va], y[va]


def loaders(xtr, ytr, xva, yva, batch=32, seed=0, shuffle=True):
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=batch, shuffle=shuffle, generator=g)
    val = DataLoader(TensorDataset(xva, yva), batch_size=256)
    return train, val


def breast_cancer(seed=0):
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(d.target, dtype=torch.float32)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[perm[:450]], y[perm[:450]], x[perm[450:]], y[perm[450:]]


def diabetes(seed=0):
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(d.target, dtype=torch.float32)
    y = (y - y.mean()) / y.std()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return x[perm[:350]], y[perm[:350]], x[perm[350:]], y[perm[350:]]


class SmallCNN(nn.Module):
    def __init__(self, bn=False):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), norm(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), norm(32), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def mlp(sizes, act=nn.ReLU):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])


def evaluate(model, val, loss_fn=nn.CrossEntropyLoss()):
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in val:
            out = model(x)
            total += loss_fn(out, y).item() * len(y)
            if out.dim() == 2 and out.shape[1] > 1:
                correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    model.train()
    return total / n, correct / n


def fit(model, opt, train, val=None, epochs=5, loss_fn=None, scheduler=None, clip=None,
        log=True):
    """The ordinary loop: zero_grad, forward, loss, backward, (clip), step, epoch scheduler."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        if scheduler is not None:
            scheduler.step()
        if val is not None and log:
            vl, acc = evaluate(model, val, loss_fn)
            print(f"epoch {epoch} val_loss {vl:.4f} val_acc {acc:.3f}")


def pretrained_mlp(x, y):
    """An MLP trained on 10-class digits (flat): a pretrained model to fine-tune."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU()),
                          nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(15):
        for i in range(0, len(y), 32):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    return model
