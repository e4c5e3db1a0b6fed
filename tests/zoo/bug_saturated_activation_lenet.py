"""Bug: a LeNet-style tanh CNN on the digits whose weights were initialised with
nn.init.normal_(std=2.0) ("big random weights break symmetry"): with 9..144 inputs per unit the
pre-activations are many times larger than 1, the hidden tanh units sit at +-1 where their
gradient is ~0, and the network learns far worse than with the default init.
Expect saturated_activation (root cause)."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "saturated_activation"


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=2.0)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        total, correct = 0.0, 0
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                total += nn.functional.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(1) == y).sum().item()
        n = len(val.dataset)
        print(f"epoch {epoch} val_loss {total / n:.3f} val_acc {correct / n:.3f}")
    return monitor


if __name__ == "__main__":
    main()
