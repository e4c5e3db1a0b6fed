"""Clean: deep residual MLP whose blocks run through torch.utils.checkpoint (reentrant for the
first half, non-reentrant for the second), trained on digits with AdamW."""
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from _common import digits, loaders

EXPECT = None


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class DeepMLP(nn.Module):
    def __init__(self, d_in=64, d=64, depth=6, classes=10):
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, classes))

    def forward(self, x):
        h = self.inp(x)
        for i, blk in enumerate(self.blocks):
            if self.training:
                h = checkpoint(blk, h, use_reentrant=i < len(self.blocks) // 2)
            else:
                h = blk(h)
        return self.out(h)


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    train, val = loaders(xtr, ytr, xva, yva, batch=64)
    model = DeepMLP()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva)
            vl = F.cross_entropy(logits, yva)
        acc = (logits.argmax(1) == yva).float().mean()
        print(f"epoch {epoch} train_loss {loss.item():.4f} val_loss {vl.item():.4f} "
              f"val_acc {acc.item():.3f}")
    return monitor


if __name__ == "__main__":
    main()
