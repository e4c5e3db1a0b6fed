"""Bug: a 10-layer sigmoid MLP trained with plain SGD. Expect vanishing_gradient."""
import torch
from torch import nn
from _common import digits, fit, loaders, mlp

EXPECT = "vanishing_gradient"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = mlp([64] + [64] * 9 + [10], act=nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
