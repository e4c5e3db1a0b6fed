"""Bug: raw 0..16 pixel values into a tanh MLP initialised with std 1. Expect input_not_normalized (root cause) and
saturated_activation."""
import torch
from torch import nn
from _common import digits, fit, loaders, mlp

EXPECT = "input_not_normalized"
ALSO = ("saturated_activation",)


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True, scale=False), batch=32)
    model = mlp([64, 64, 64, 10], act=nn.Tanh)
    for p in model.parameters():
        nn.init.normal_(p, std=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
