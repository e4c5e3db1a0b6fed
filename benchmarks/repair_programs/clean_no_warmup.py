"""Clean twin of bug_no_warmup.py: the IRNN on the adding problem, trained with Adam(lr=0.01)
and a cosine schedule that starts with a linear warmup over the first 200 steps.
Metric: validation R^2 (1 - MSE / variance of the targets; higher is better)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

FINDING = None
REMEDY = None
WARMUP = 200              # steps of linear learning-rate warmup
T = 15


def adding_problem(n, gen):
    values = torch.rand(n, T, generator=gen)
    marks = torch.zeros(n, T)
    rows = torch.arange(n)
    marks[rows, torch.randint(0, T // 2, (n,), generator=gen)] = 1.0
    marks[rows, torch.randint(T // 2, T, (n,), generator=gen)] = 1.0
    return torch.stack([values, marks], -1), (values * marks).sum(1)


class IRNN(nn.Module):
    def __init__(self, hidden=128):
        super().__init__()
        self.rnn = nn.RNN(2, hidden, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            self.rnn.weight_hh_l0.copy_(torch.eye(hidden))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(1)


gen = torch.Generator().manual_seed(0)
xtr, ytr = adding_problem(2000, gen)
xva, yva = adding_problem(500, gen)
torch.manual_seed(0)
model = IRNN()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
epochs, batch = 40, 50
total = epochs * math.ceil(len(ytr) / batch)


def schedule(step):
    warm = min(1.0, (step + 1) / WARMUP) if WARMUP else 1.0
    return warm * 0.5 * (1 + math.cos(math.pi * step / total))


scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

for epoch in range(epochs):
    model.train()
    perm = torch.randperm(len(ytr))
    for i in range(0, len(ytr), batch):
        b = perm[i:i + batch]
        optimizer.zero_grad()
        loss = F.mse_loss(model(xtr[b]), ytr[b])
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        val_mse = F.mse_loss(model(xva), yva).item()
    r2 = 1 - val_mse / yva.var().item()
    print(f"epoch {epoch + 1}: val mse {val_mse:.4f}, val R^2 {r2:.4f}")
print(f"FINAL val_r2={r2:.4f}")
