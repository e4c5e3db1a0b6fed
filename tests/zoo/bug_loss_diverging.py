"""Bug: the LR lambda was meant to decay (0.99**step) but grows (1.03**step). Expect learning_rate_too_high
(root cause) and loss_diverging."""
import torch
from torch import nn
from _common import digits, loaders, mlp

EXPECT = "learning_rate_too_high"
ALSO = ("loss_diverging",)


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(flat=True), batch=32)
    model = mlp([64, 64, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.03 ** step)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
    return monitor


if __name__ == "__main__":
    main()
