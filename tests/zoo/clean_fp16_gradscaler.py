"""Clean: float16 autocast on CPU with torch.amp.GradScaler; the first steps overflow at the
initial scale and are skipped by the scaler (inf gradients there are normal), then it trains."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders, mlp

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    train, val = loaders(xtr, ytr, xva, yva, batch=64)
    model = mlp([64, 256, 256, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    monitor = watch(model, opt) if watch else None
    skipped = 0
    for epoch in range(5):
        model.train()
        for x, y in train:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            skipped += scaler.get_scale() < scale
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
            logits = model(xva)
            vl = F.cross_entropy(logits, yva)
        acc = (logits.argmax(1) == yva).float().mean()
        print(f"epoch {epoch} val_loss {vl.item():.4f} val_acc {acc.item():.3f} "
              f"scale {scaler.get_scale():.0f} skipped_steps {skipped}")
    return monitor


if __name__ == "__main__":
    main()
