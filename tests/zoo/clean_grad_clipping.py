"""Clean: a fairly high LR kept in check by gradient clipping."""
import torch
from _common import digits, fit, loaders, mlp

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = mlp([64, 128, 128, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=5, clip=1.0)
    return monitor


if __name__ == "__main__":
    main()
