"""Clean: bf16 autocast on CPU (the loss is computed in float32)."""
import torch
from torch import nn
from _common import SmallCNN, digits, loaders

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(), batch=32)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        for x, y in train:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
