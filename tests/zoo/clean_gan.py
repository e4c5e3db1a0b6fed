"""Clean: GAN on a 2-D ring of 8 Gaussians; two Adam optimizers (betas 0.5, 0.999),
discriminator step on detached fakes, then generator step, BCE-with-logits losses."""
import math

import torch
from torch import nn
from torch.nn import functional as F

EXPECT = None


def sample_real(n, g):
    k = torch.randint(8, (n,), generator=g).float()
    centers = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 2.0
    return centers + 0.05 * torch.randn(n, 2, generator=g)


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    zdim = 8
    gen = nn.Sequential(nn.Linear(zdim, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 2))
    disc = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64),
                         nn.LeakyReLU(0.2), nn.Linear(64, 1))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    monitor = watch([gen, disc], [opt_g, opt_d]) if watch else None

    def quality():
        """Mean distance of generated points to the nearest mode (real data: ~0.06)."""
        with torch.no_grad():
            fake = gen(torch.randn(1000, zdim, generator=g))
        ang = torch.arange(8) * math.pi / 4
        centers = torch.stack([torch.cos(ang), torch.sin(ang)], 1) * 2.0
        return torch.cdist(fake, centers).min(1).values.mean().item()

    batch = 128
    print(f"start: mean distance to nearest mode {quality():.3f}")
    for step in range(1000):
        real = sample_real(batch, g)
        fake = gen(torch.randn(batch, zdim, generator=g))

        opt_d.zero_grad()
        d_real, d_fake = disc(real), disc(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        loss_d.backward()
        opt_d.step()

        opt_g.zero_grad()
        d_out = disc(fake)
        loss_g = F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
        loss_g.backward()
        opt_g.step()
        if step % 500 == 0 or step == 999:
            print(f"step {step} loss_d {loss_d.item():.3f} loss_g {loss_g.item():.3f} "
                  f"dist {quality():.3f}")
    return monitor


if __name__ == "__main__":
    main()
