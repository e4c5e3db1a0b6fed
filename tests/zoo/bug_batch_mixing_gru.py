"""Bug: a GRU classifies in which quarter of a noisy 24-step signal a pulse occurs; the data is
(batch, time, features) but nn.GRU was built without batch_first=True, so the GRU runs along the
batch, and out[:, -1] for sample i mixes the last time step of samples 0..i: it never sees its
own pulse. Expect batch_mixing (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "batch_mixing"


def pulses(n, length=24, g=None):
    x = 0.5 * torch.randn(n, length, 1, generator=g)
    where = torch.randint(0, length, (n,), generator=g)
    x[torch.arange(n), where, 0] += 3.0
    return x, where // (length // 4)


class PulseGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 32, num_layers=1)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        out, h = self.gru(x)
        return self.head(out[:, -1, :])


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    xtr, ytr = pulses(1200, g=g)
    xva, yva = pulses(300, g=g)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(xva, yva), batch_size=100)
    model = PulseGRU()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    criterion = nn.CrossEntropyLoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        correct, losses = 0, []
        with torch.no_grad():
            for x, y in val:
                out = model(x)
                losses.append(criterion(out, y).item())
                correct += (out.argmax(1) == y).sum().item()
        print(f"epoch {epoch} val_loss {sum(losses) / len(losses):.3f} val_acc {correct / len(yva):.3f}")
    return monitor


if __name__ == "__main__":
    main()
