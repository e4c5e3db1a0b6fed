"""Bug: the validation helper calls model.eval() and the training loop never calls model.train()
again, so from the second epoch on the CNN trains with dropout off and BatchNorm frozen at its
running statistics. Expect train_in_eval_mode (root cause)."""
import torch
from torch import nn
import torch.nn.functional as F
from _common import digits, loaders

EXPECT = "train_in_eval_mode"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 4 * 4, 10))

    def forward(self, x):
        return self.head(self.conv(x))


def validate(model, val):
    model.eval()
    loss, n = 0.0, 0
    with torch.no_grad():
        for x, y in val:
            loss += F.cross_entropy(model(x), y, reduction="sum").item()
            n += len(y)
    return loss / n


def main(watch=None):
    torch.manual_seed(0)
    train, val = loaders(*digits(), batch=32)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    model.train()
    for epoch in range(5):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        print(f"epoch {epoch} val_loss {validate(model, val):.4f}")
    return monitor


if __name__ == "__main__":
    main()
