"""Bug: a hand-written L2 normalisation takes sqrt of a sum that is exactly zero for dead
rows; the backward of sqrt at 0 is Inf. Expect nonfinite_gradient."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "nonfinite_gradient"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)
        nn.init.constant_(self.fc1.bias, -1.0)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = h / torch.sqrt((h ** 2).sum(1, keepdim=True))
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
