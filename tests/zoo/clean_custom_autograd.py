"""Clean: a model using custom torch.autograd.Functions: a memory-saving Swish with a
hand-written backward, and a straight-through sign quantiser for a binarised bottleneck."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import digits, loaders

EXPECT = None


class SwishFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_out * (s * (1 + x * (1 - s)))


class SignSTE(torch.autograd.Function):
    """sign() forward, identity gradient clipped to |x| <= 1 backward (hardtanh STE)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * (x.abs() <= 1).to(grad_out.dtype)


class Swish(nn.Module):
    def forward(self, x):
        return SwishFn.apply(x)


class BinaryCodeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 128), Swish(), nn.Linear(128, 48))
        self.bn = nn.LayerNorm(48)
        self.head = nn.Sequential(nn.Linear(48, 64), Swish(), nn.Linear(64, 10))

    def forward(self, x):
        code = SignSTE.apply(self.bn(self.enc(x)))     # 48-bit binary code
        return self.head(code)


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits(flat=True)
    train, val = loaders(xtr, ytr, xva, yva, batch=64)
    model = BinaryCodeNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    monitor = watch(model, opt) if watch else None
    for epoch in range(6):
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
        print(f"epoch {epoch} val_loss {vl.item():.4f} val_acc {acc.item():.3f}")
    return monitor


if __name__ == "__main__":
    main()
