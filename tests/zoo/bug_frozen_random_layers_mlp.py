"""Bug: a "freeze the backbone, train only the head" block copied from a fine-tuning tutorial was
left in a model trained from scratch: the MLP backbone stays at its random initialisation
(requires_grad=False, and only trainable parameters go to the optimizer), so only the last
linear layer learns, on random features. Expect frozen_random_layers (root cause)."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "frozen_random_layers"


class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                      nn.Linear(32, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.backbone(x))


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(flat=True), batch=32)
    model = DigitNet()
    # freeze the backbone, train only the classifier head
    for p in model.backbone.parameters():
        p.requires_grad = False
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                total += nn.functional.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
                n += len(y)
        print(f"epoch {epoch} val_loss {total / n:.3f} val_acc {correct / n:.3f}")
    return monitor


if __name__ == "__main__":
    main()
