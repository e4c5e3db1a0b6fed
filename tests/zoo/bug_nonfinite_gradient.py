"""Bug: a square-root activation "guarded" with torch.where(h > 0, sqrt(h), 0): the forward is
finite, but sqrt is still evaluated at the negative entries and where's backward multiplies its
NaN gradient by zero (NaN). Expect nonfinite_gradient (root cause) before the loss turns NaN."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "nonfinite_gradient"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = self.fc1(x)
        h = torch.where(h > 0, torch.sqrt(h), torch.zeros_like(h))
        return self.fc2(h)


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(flat=True), batch=32)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = watch(model, opt) if watch else None
    for epoch in range(3):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
