"""Bug: zero_grad() sits between backward() and step(). Expect params_not_updating."""
import torch
from torch import nn
from _common import SmallCNN, digits, loaders

EXPECT = "params_not_updating"


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(3):
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.zero_grad()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
