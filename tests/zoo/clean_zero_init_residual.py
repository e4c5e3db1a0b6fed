"""Clean: DiT-style adaLN-Zero residual blocks: each block's adaLN modulation layer (weights
and bias) is initialised to exactly zero, so every block starts as the identity; it trains."""
import torch
from torch import nn
from torch.nn import functional as F

EXPECT = None


class AdaLNBlock(nn.Module):
    def __init__(self, d, cond_dim):
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 3 * d))
        nn.init.zeros_(self.ada[1].weight)          # adaLN-Zero
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c):
        shift, scale, gate = self.ada(c).chunk(3, dim=1)
        h = self.norm(x) * (1 + scale) + shift
        return x + gate * self.mlp(h)


class CondDenoiser(nn.Module):
    """Predicts the noise added to a 2-D point, conditioned on the noise level and class."""

    def __init__(self, d=64, classes=4, depth=3):
        super().__init__()
        self.inp = nn.Linear(2, d)
        self.t_emb = nn.Sequential(nn.Linear(1, d), nn.SiLU(), nn.Linear(d, d))
        self.y_emb = nn.Embedding(classes, d)
        self.blocks = nn.ModuleList(AdaLNBlock(d, d) for _ in range(depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.out = nn.Linear(d, 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, t, y):
        c = self.t_emb(t[:, None]) + self.y_emb(y)
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, c)
        return self.out(self.final_norm(h))


def sample(n, g):
    y = torch.randint(4, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    return centers[y] + 0.3 * torch.randn(n, 2, generator=g), y


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = CondDenoiser()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    monitor = watch(model, opt) if watch else None
    xva, yva = sample(1024, g)
    tva = torch.rand(1024, generator=g)
    nva = torch.randn(1024, 2, generator=g)

    def noisy(x0, t, noise):
        a = torch.cos(t * torch.pi / 2)[:, None]
        return a * x0 + (1 - a ** 2).sqrt() * noise

    def val_loss():
        model.eval()
        with torch.no_grad():
            loss = F.mse_loss(model(noisy(xva, tva, nva), tva, yva), nva)
        model.train()
        return loss.item()

    print(f"start val_mse {val_loss():.4f} (predicting zero noise: 1.0)")
    for step in range(1, 401):
        x0, y = sample(128, g)
        t = torch.rand(128, generator=g)
        noise = torch.randn(128, 2, generator=g)
        loss = F.mse_loss(model(noisy(x0, t, noise), t, y), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(f"step {step} train_mse {loss.item():.4f} val_mse {val_loss():.4f}")
    return monitor


if __name__ == "__main__":
    main()
