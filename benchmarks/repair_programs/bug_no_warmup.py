"""Planted bug: an IRNN (ReLU RNN with identity-initialised recurrence, Le et al. 2015) on the
adding problem, trained with Adam(lr=0.01) and a cosine schedule WITHOUT the linear warmup the
schedule was meant to start with. Adam's first steps are full-size (about lr per weight,
whatever the gradient's scale, while its second-moment estimate rests on a batch or two): on
step 1 every prediction is too low, nearly every weight moves by the full 0.01 at once, the
recurrence's norm goes from 1 to 1.5, and fed back for 15 steps the ReLU state blows up: the
mean prediction jumps from -0.3 to 60 and the loss from 2 to about 3500. The run never recovers
(it ends predicting little more than the mean). The clean twin warms the learning rate up
linearly over the first 200 steps.
FINDING = "exploding_gradient" (loss_diverging follows from it); REMEDY = "warmup" (an adaptive
optimizer and a fault in the first 200 steps put it first; clipping the gradient would not
shrink Adam's normalised steps).
Metric: validation R^2 (1 - MSE / variance of the targets; higher is better)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

FINDING = "exploding_gradient"
REMEDY = "warmup"
WARMUP = 0                # steps of linear learning-rate warmup (meant: 200)
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
