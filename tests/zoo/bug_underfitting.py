"""Bug: a linear model with a goal of 99% validation accuracy on digits. Expect underfitting
(training accuracy itself stays below the goal)."""
import torch
from torch import nn
from _common import digits, evaluate, loaders

EXPECT = "underfitting"
GOAL = "val_acc>=0.99"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        print(f"epoch {epoch} val_acc {evaluate(model, val)[1]:.3f}")
    return monitor


if __name__ == "__main__":
    main()
