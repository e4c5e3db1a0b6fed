"""Bug: an epoch scheduler (StepLR step_size=10, gamma=0.1) is stepped every batch. Expect
lr_schedule_collapsed."""
import torch
from torch import nn
from _common import SmallCNN, digits, loaders

EXPECT = "lr_schedule_collapsed"


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return monitor


if __name__ == "__main__":
    main()
