"""Bug: every Linear weight initialised to the constant 0.05. Expect symmetric_weights."""
import torch
from torch import nn
from _common import digits, fit, loaders, mlp

EXPECT = "symmetric_weights"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = mlp([64, 64, 64, 10])
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.05)
            nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
