"""Clean: linear warmup then cosine decay to zero, stepped per batch (as it should be)."""
import math

import torch
from torch import nn
from _common import SmallCNN, digits, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(), batch=32)
    model = SmallCNN()
    epochs, warmup = 6, 40
    total = epochs * len(train)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else
        0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    monitor = watch(model, opt) if watch else None
    for epoch in range(epochs):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return monitor


if __name__ == "__main__":
    main()
