"""Bug: a small fully-convolutional net segments tiny bright spots in noisy generated images; the
spots cover about 1% of the pixels and the per-pixel cross-entropy is unweighted, so predicting
"background" everywhere is 99% right and the net never finds the spots (foreground IoU ~0
behind a 99% pixel accuracy). Expect class_imbalance (root cause)."""
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

EXPECT = "class_imbalance"


def make_images(n, size=32, g=None):
    images = torch.randn(n, 1, size, size, generator=g)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(1, size - 4, (2,), generator=g).tolist()
        masks[i, r:r + 3, c:c + 3] = 1
    images += 2.0 * masks.unsqueeze(1)
    return images, masks


class SpotNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 2, 1))

    def forward(self, x):
        return self.body(x)


def main(watch=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    xtr, mtr = make_images(480, g=g)
    xva, mva = make_images(160, g=g)
    print(f"foreground pixels: {mtr.float().mean():.1%}")
    train = DataLoader(TensorDataset(xtr, mtr), batch_size=16, shuffle=True)
    model = SpotNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(5):
        model.train()
        for x, m in train:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), m)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva)
            val_loss = F.cross_entropy(logits, mva).item()
            pred = logits.argmax(1)
        pixel_acc = (pred == mva).float().mean().item()
        inter = ((pred == 1) & (mva == 1)).sum().item()
        union = ((pred == 1) | (mva == 1)).sum().item()
        print(f"epoch {epoch} val_loss {val_loss:.4f} pixel_acc {pixel_acc:.3f} "
              f"spot_iou {inter / max(union, 1):.3f}")
    return monitor


if __name__ == "__main__":
    main()
