"""Clean: digits CNN, SGD with momentum and step decay per epoch."""
import torch
from _common import SmallCNN, digits, fit, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.3)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=6, scheduler=sched)
    return monitor


if __name__ == "__main__":
    main()
