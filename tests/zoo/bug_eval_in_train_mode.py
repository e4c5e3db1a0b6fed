"""Bug: validation runs under no_grad but model.eval() was forgotten, with dropout in the model.
Expect eval_in_train_mode."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "eval_in_train_mode"


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(4):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        with torch.no_grad():                      # model.eval() forgotten
            losses = [nn.functional.cross_entropy(model(x), y).item() for x, y in val]
        print(f"epoch {epoch} val_loss {sum(losses) / len(losses):.4f}")
    return monitor


if __name__ == "__main__":
    main()
