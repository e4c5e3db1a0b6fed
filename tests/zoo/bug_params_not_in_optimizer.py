"""Bug: the head is replaced after the optimizer was built (transfer-learning style). Expect
params_not_in_optimizer."""
import torch
from torch import nn
from _common import SmallCNN, digits, fit, loaders

EXPECT = "params_not_in_optimizer"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.classifier[-1] = nn.Linear(64, 10)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
