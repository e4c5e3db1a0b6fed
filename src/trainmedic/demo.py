"""The built-in demo: a small CNN on scikit-learn's digits (8x8 images, 10 classes), trained
clean or with one planted bug, watched by trainmedic."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

BUGS = {
    "lr-too-high": "SGD with lr=3.0 (a good value is about 0.05)",
    "lr-too-low": "SGD with lr=1e-5",
    "zero-init": "every weight initialised to zero",
    "missing-params": "the classifier head is left out of the optimizer",
    "softmax-before-ce": "the model ends in softmax and feeds CrossEntropyLoss",
    "no-zero-grad": "optimizer.zero_grad() is never called",
}


_SCRIPT = '''"""The trainmedic demo as a standalone script: a small CNN on scikit-learn's digits.
Planted bug: {title}."""
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return {output}


data = load_digits()
x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
y = torch.tensor(data.target)
idx_tr, idx_va = train_test_split(range(len(y)), test_size=0.2, random_state=0, stratify=data.target)
xtr, ytr, xva, yva = x[idx_tr], y[idx_tr], x[idx_va], y[idx_va]
mean, std = xtr.mean(), xtr.std()
xtr, xva = (xtr - mean) / std, (xva - mean) / std

torch.manual_seed(0)
model = DigitsCNN()
{init}optimizer = torch.optim.SGD({params}, lr={lr}, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
for epoch in range({epochs}):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), 32):
        b = perm[i:i + 32]
{zero_grad}        loss = loss_fn(model(xtr[b]), ytr[b])
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        val_loss = loss_fn(model(xva), yva).item()
        acc = (model(xva).argmax(1) == yva).float().mean().item()
    print(f"epoch {{epoch + 1}}: val loss {{val_loss:.4f}}, val accuracy {{acc:.3f}}")
'''


def script_source(bug: str | None = None, epochs: int = 6) -> str:
    """The demo as a standalone training script with ``bug`` planted (None: clean), each bug
    written the way people write it (a literal ``lr=3.0``, a missing ``zero_grad()``...)."""
    if bug is not None and bug not in BUGS:
        raise ValueError(f"bug={bug!r} is not a demo bug; expected one of {sorted(BUGS)}")
    return _SCRIPT.format(
        title=BUGS[bug] if bug else "none (a clean run)", epochs=epochs,
        output="self.head(x).softmax(1)" if bug == "softmax-before-ce" else "self.head(x)",
        init=("for p in model.parameters():\n    nn.init.zeros_(p)\n" if bug == "zero-init" else ""),
        params=("[p for n, p in model.named_parameters() if not n.startswith(\"head\")]"
                if bug == "missing-params" else "model.parameters()"),
        lr={"lr-too-high": "3.0", "lr-too-low": "1e-5"}.get(bug, "0.05"),
        zero_grad="" if bug == "no-zero-grad" else "        optimizer.zero_grad()\n")


class DigitsCNN(nn.Module):
    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.head = nn.Linear(64, 10)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = self.head(x)
        return x.softmax(1) if self.softmax else x


def digits(seed: int = 0):
    """Standardised digits as (train_x, train_y, val_x, val_y) tensors."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    idx_tr, idx_va = train_test_split(range(len(y)), test_size=0.2, random_state=seed, stratify=data.target)
    xtr, xva = x[idx_tr], x[idx_va]
    mean, std = xtr.mean(), xtr.std()
    return (xtr - mean) / std, y[idx_tr], (xva - mean) / std, y[idx_va]


def run_demo(bug: str | None = None, epochs: int = 6, seed: int = 0, every: int = 25,
             run_dir: str | None = None, out=sys.stdout):
    """Train the digits CNN with ``bug`` planted (None: clean) and return the Report."""
    import trainmedic

    if bug is not None and bug not in BUGS:
        raise ValueError(f"bug={bug!r} is not a demo bug; expected one of {sorted(BUGS)}")
    torch.manual_seed(seed)
    xtr, ytr, xva, yva = digits(seed)
    model = DigitsCNN(softmax=bug == "softmax-before-ce")
    if bug == "zero-init":
        for p in model.parameters():
            nn.init.zeros_(p)
    lr = {"lr-too-high": 3.0, "lr-too-low": 1e-5}.get(bug, 0.05)
    params = [p for n, p in model.named_parameters() if not (bug == "missing-params" and n.startswith("head"))]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    print(f"demo: digits CNN, {'bug: ' + BUGS[bug] if bug else 'no bug'}", file=out)
    monitor = trainmedic.watch(model, opt, every=every, run_dir=run_dir, name=f"demo-{bug or 'clean'}")
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr))
        total = 0.0
        for i in range(0, len(ytr), 32):
            b = perm[i:i + 32]
            if bug != "no-zero-grad":
                opt.zero_grad()
            loss = loss_fn(model(xtr[b]), ytr[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        model.eval()
        with torch.no_grad():
            acc = (model(xva).argmax(1) == yva).float().mean().item()
        print(f"epoch {epoch + 1}: train loss {total / len(ytr):.4f}, val accuracy {acc:.3f}", file=out)
    report = monitor.report()
    print(report, file=out)
    print(f"report written to {monitor.report_path}", file=out)
    return report
