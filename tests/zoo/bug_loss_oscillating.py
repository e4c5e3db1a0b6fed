"""Bug: SGD with lr=0.5 and momentum 0.9 (an effective step of 5) on a digits MLP. Expect
learning_rate_too_high (root cause) and loss_oscillating."""
import torch
from _common import digits, fit, loaders, mlp

EXPECT = "learning_rate_too_high"
ALSO = ("loss_oscillating",)


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = mlp([64, 64, 10])
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=3)
    return monitor


if __name__ == "__main__":
    main()
