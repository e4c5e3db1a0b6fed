"""Bug: labels are shuffled separately from the images (misaligned). Expect label_noise (root
cause: the labels carry no signal) and loss_not_decreasing."""
import torch
from _common import SmallCNN, digits, fit, loaders

EXPECT = "label_noise"
ALSO = ("loss_not_decreasing",)


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits()
    ytr = ytr[torch.randperm(len(ytr))]
    train, val = loaders(xtr, ytr, xva, yva, batch=32)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=4)
    return monitor


if __name__ == "__main__":
    main()
