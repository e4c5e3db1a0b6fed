"""Bug: an IRNN (ReLU RNN, identity recurrence) on the adding problem, trained with SGD and
momentum without the gradient clipping it needs: the first step's gradient is thousands of
times the usual size, the loss jumps and the ReLUs never recover. Expect exploding_gradient
(a spike, not a learning rate too high: the other steps' updates are of healthy size)."""
import torch
from torch import nn

EXPECT = "exploding_gradient"
T = 20


def adding_problem(n, gen):
    values = torch.rand(n, T, generator=gen)
    marks = torch.zeros(n, T)
    rows = torch.arange(n)
    marks[rows, torch.randint(0, T // 2, (n,), generator=gen)] = 1.0
    marks[rows, torch.randint(T // 2, T, (n,), generator=gen)] = 1.0
    return torch.stack([values, marks], -1), (values * marks).sum(1)


class IRNN(nn.Module):
    def __init__(self, hidden=48):
        super().__init__()
        self.rnn = nn.RNN(2, hidden, nonlinearity="relu", batch_first=True)
        with torch.no_grad():
            self.rnn.weight_hh_l0.copy_(torch.eye(hidden))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1]).squeeze(1)


def main(watch=None):
    gen = torch.Generator().manual_seed(1)
    x, y = adding_problem(1600, gen)
    torch.manual_seed(1)
    model = IRNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    monitor = watch(model, opt) if watch else None
    for epoch in range(6):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 32):
            b = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.mse_loss(model(x[b]), y[b]).backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
