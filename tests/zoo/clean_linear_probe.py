"""Clean: linear probe. A feature extractor pretrained in the program keeps requires_grad=True,
but runs under torch.no_grad() in the forward and only the head is given to the optimizer."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders

EXPECT = None


class Probe(nn.Module):
    def __init__(self, encoder, dim, classes):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        with torch.no_grad():
            z = self.encoder(x)
        return self.head(z)


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    train, val = loaders(xtr, ytr, xva, yva, batch=64)

    # pretrain an encoder as an autoencoder (no labels)
    encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU())
    decoder = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64))
    ae = nn.Sequential(encoder, decoder)
    ae_opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    monitor = watch(ae, ae_opt) if watch else None
    for epoch in range(6):
        for x, _ in train:
            ae_opt.zero_grad()
            loss = F.mse_loss(ae(x), x)
            loss.backward()
            ae_opt.step()
        print(f"autoencoder epoch {epoch} recon {loss.item():.4f}")

    # linear probe on the frozen-by-no_grad features
    probe = Probe(encoder, 32, 10)
    opt = torch.optim.Adam(probe.head.parameters(), lr=1e-2)
    for epoch in range(8):
        probe.train()
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(probe(x), y).backward()
            opt.step()
        probe.eval()
        with torch.no_grad():
            correct = sum((probe(x).argmax(1) == y).sum().item() for x, y in val)
            vl = sum(F.cross_entropy(probe(x), y, reduction="sum").item() for x, y in val)
        print(f"probe epoch {epoch} val_loss {vl / len(yva):.4f} val_acc {correct / len(yva):.3f}")
    return monitor


if __name__ == "__main__":
    main()
