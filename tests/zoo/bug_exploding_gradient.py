"""Bug: a ReLU RNN whose recurrent weights start at 2x orthogonal, unclipped. Expect
exploding_gradient."""
import torch
from torch import nn
from _common import digits, loaders

EXPECT = "exploding_gradient"


class RNNClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(8, 64, nonlinearity="relu", batch_first=True)
        nn.init.orthogonal_(self.rnn.weight_hh_l0, gain=2.0)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        seq = x.reshape(len(x), 8, 8).repeat(1, 4, 1)   # 32 time steps
        out, _ = self.rnn(seq)
        return self.head(out[:, -1])


def main(watch=None):
    torch.manual_seed(0)
    train, _ = loaders(*digits(flat=True), batch=32)
    model = RNNClassifier()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(3):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return monitor


if __name__ == "__main__":
    main()
