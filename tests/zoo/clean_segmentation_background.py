"""Clean: tiny fully-convolutional segmentation net on generated 32x32 images with a few
rectangles (~90% background pixels); per-pixel weighted cross-entropy, Adam; reports IoU."""
import torch
from torch import nn
from torch.nn import functional as F

EXPECT = None


def make_images(n, g, size=32):
    x = 0.3 * torch.randn(n, 1, size, size, generator=g)
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            h, w = torch.randint(4, 9, (2,), generator=g).tolist()
            r, c = torch.randint(0, size - 8, (2,), generator=g).tolist()
            y[i, r:r + h, c:c + w] = 1
    x = x + y[:, None].float()            # foreground is brighter, noisy
    return x, y


class FCN(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.out = nn.Conv2d(2 * c, 2, 1)

    def forward(self, x):
        d = self.down(x)
        u = self.up(self.mid(d))
        return self.out(torch.cat([d, u], 1))


def iou(logits, y):
    pred = logits.argmax(1) == 1
    fg = y == 1
    return ((pred & fg).sum() / (pred | fg).sum().clamp(min=1)).item()


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    xtr, ytr = make_images(256, g)
    xva, yva = make_images(64, g)
    fg_frac = (ytr == 1).float().mean().item()
    weight = torch.tensor([0.5 / (1 - fg_frac), 0.5 / fg_frac])
    weight = weight / weight.sum() * 2
    model = FCN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    monitor = watch(model, opt) if watch else None
    print(f"foreground fraction {fg_frac:.3f}, class weights {weight.tolist()}")
    batch = 16
    for epoch in range(5):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx], weight=weight)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva)
            vl = F.cross_entropy(logits, yva, weight=weight)
        print(f"epoch {epoch} train_loss {loss.item():.4f} val_loss {vl.item():.4f} "
              f"val_fg_iou {iou(logits, yva):.3f}")
    return monitor


if __name__ == "__main__":
    main()
