"""Bug: a house-price regressor is trained with MSE on prices in dollars (about 100k..600k);
the inputs are standardised but the targets are not, so the network with AdamW (steps of ~lr
per weight) cannot move its outputs to that scale within the run and the validation error stays
huge. Expect target_not_normalized (root cause)."""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "target_not_normalized"


def houses(n, g):
    sqft = 600 + 2400 * torch.rand(n, generator=g)
    rooms = torch.randint(1, 7, (n,), generator=g).float()
    age = 60 * torch.rand(n, generator=g)
    dist = 30 * torch.rand(n, generator=g)
    price = (60_000 + 110 * sqft + 9_000 * rooms - 900 * age - 2_500 * dist
             + 15_000 * torch.randn(n, generator=g))
    return torch.stack([sqft, rooms, age, dist], 1), price


class PriceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.deep = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                  nn.Linear(32, 1))

    def forward(self, x):
        return (self.linear(x) + self.deep(x)).squeeze(-1)


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    xtr, ytr = houses(800, g)
    xva, yva = houses(200, g)
    mu, sd = xtr.mean(0), xtr.std(0)
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    model = PriceNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    criterion = nn.MSELoss()
    monitor = watch(model, opt) if watch else None
    for epoch in range(10):
        model.train()
        for xb, yb in train:
            opt.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(xva)
            val_mse = criterion(pred, yva).item()
        if epoch % 2 == 1:
            print(f"epoch {epoch} val_rmse ${val_mse ** 0.5:,.0f} val_r2 {1 - val_mse / yva.var().item():.3f}")
    return monitor


if __name__ == "__main__":
    main()
