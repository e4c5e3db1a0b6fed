"""Bug: weight_decay=0.5 (meant 5e-4). Expect regularization_dominates."""
import torch
from _common import SmallCNN, digits, fit, loaders

EXPECT = "regularization_dominates"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.5)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=4)
    return monitor


if __name__ == "__main__":
    main()
