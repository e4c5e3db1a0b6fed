"""A small seeded training script used by the non-interference, fail-safe and runner tests.
Prints its losses; saves its final parameters to the path given as the first argument."""
import sys

import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(256, 20)
y = (x[:, :3].sum(1) > 0).long()
model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
sched = torch.optim.lr_scheduler.StepLR(opt, 20, 0.5)


def train(steps=60):
    for step in range(steps):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.6f}")
    model.eval()
    with torch.no_grad():
        print("accuracy", (model(x).argmax(1) == y).float().mean().item())


if __name__ == "__main__":
    train()
    if len(sys.argv) > 1:
        torch.save(model.state_dict(), sys.argv[1])
