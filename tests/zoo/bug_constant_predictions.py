"""Bug: a units mix-up scales the inputs by 1e-9 before the model, so every sample looks the
same. Expect input_not_normalized (root cause) and constant_predictions."""
import torch
from torch import nn
from _common import diabetes, loaders, mlp

EXPECT = "input_not_normalized"
ALSO = ("constant_predictions",)


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*diabetes(), batch=32)
    model = mlp([10, 64, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(20):
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x * 1e-9).squeeze(1), y)
            loss.backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
