"""Clean: VAE on flattened digits with the reparameterisation trick; reconstruction BCE with
logits plus KL, with linear KL annealing (beta 0 -> 1), Adam."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders

EXPECT = None


class VAE(nn.Module):
    def __init__(self, d=64, h=128, z=8):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU())
        self.mu, self.logvar = nn.Linear(h, z), nn.Linear(h, z)
        self.dec = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, d))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def losses(model, x):
    logits, mu, logvar = model(x)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    return rec, kl


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True, scale=False)
    xtr, xva = xtr / 16.0, xva / 16.0          # pixel intensities in [0, 1]
    train, val = loaders(xtr, ytr, xva, yva, batch=64)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    epochs = 12
    anneal_steps = 6 * len(train)
    step = 0
    with torch.no_grad():
        rec, kl = losses(model, xva)
    print(f"start val_elbo {(rec + kl).item():.2f}")
    for epoch in range(epochs):
        model.train()
        for x, _ in train:
            beta = min(1.0, step / anneal_steps)
            rec, kl = losses(model, x)
            loss = rec + beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            rec, kl = losses(model, xva)
        print(f"epoch {epoch} beta {beta:.2f} val_rec {rec.item():.2f} val_kl {kl.item():.2f} "
              f"val_elbo {(rec + kl).item():.2f}")
    return monitor


if __name__ == "__main__":
    main()
