"""Bug: zero_grad() is never called. Expect grads_not_cleared."""
import torch
from torch import nn
from _common import digits, loaders, mlp

EXPECT = "grads_not_cleared"


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(flat=True), batch=32)
    model = mlp([64, 64, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(3):
        for x, y in train:
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
