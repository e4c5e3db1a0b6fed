"""Clean: a hand-written GRU-style cell (sigmoid gates, tanh candidate) with Adam and clipping."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = None


class GatedCell(nn.Module):
    def __init__(self, n_in, n_h):
        super().__init__()
        self.gates = nn.Linear(n_in + n_h, 2 * n_h)
        self.cand = nn.Linear(n_in + n_h, n_h)

    def forward(self, x, h):
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        c = torch.tanh(self.cand(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * c


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = GatedCell(8, 48)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        rows = x.reshape(len(x), 8, 8)
        h = x.new_zeros(len(x), 48)
        for t in range(8):
            h = self.cell(rows[:, t], h)
        return self.head(h)


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(flat=True), batch=32)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
