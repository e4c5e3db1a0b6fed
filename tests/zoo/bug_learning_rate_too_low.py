"""Bug: Adam with lr=1e-6. Expect learning_rate_too_low."""
import torch
from _common import SmallCNN, digits, fit, loaders

EXPECT = "learning_rate_too_low"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=4)
    return monitor


if __name__ == "__main__":
    main()
