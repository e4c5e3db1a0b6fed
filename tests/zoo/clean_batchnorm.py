"""Clean: CNN with BatchNorm, Adam, evaluation in eval mode."""
import torch
from _common import SmallCNN, digits, fit, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN(bn=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=5)
    return monitor


if __name__ == "__main__":
    main()
