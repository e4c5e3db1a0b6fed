"""Clean: label smoothing 0.1 with AdamW (decoupled weight decay)."""
import torch
from torch import nn
from _common import SmallCNN, digits, fit, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    monitor = watch(model, opt) if watch else None
    fit(model, opt, train, val, epochs=6, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1))
    return monitor


if __name__ == "__main__":
    main()
