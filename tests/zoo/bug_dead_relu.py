"""Bug: hidden biases initialised to -3 (meant as a sparsity trick). Expect dead_relu."""
import torch
from torch import nn
from _common import digits, fit, loaders, mlp

EXPECT = "dead_relu"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=64)
    model = mlp([64, 128, 128, 10])
    for layer in list(model)[:-1]:
        if isinstance(layer, nn.Linear):
            nn.init.constant_(layer.bias, -3.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
