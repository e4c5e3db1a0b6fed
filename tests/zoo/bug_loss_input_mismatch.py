"""Bug: predictions of shape (N, 1) against targets of shape (N,) broadcast to (N, N) in
mse_loss. Expect loss_input_mismatch."""
import warnings

import torch
from torch import nn
from _common import diabetes, loaders, mlp

EXPECT = "loss_input_mismatch"


def main(watch=None):
    warnings.filterwarnings("ignore", message="Using a target size")
    torch.manual_seed(0)
    train, _ = loaders(*diabetes(), batch=32)
    model = mlp([10, 32, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(8):
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
