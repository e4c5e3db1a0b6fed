"""Bug: SGD with lr=3.0 on the digits CNN. Expect learning_rate_too_high."""
import torch
from _common import SmallCNN, digits, fit, loaders

EXPECT = "learning_rate_too_high"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=3.0, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
