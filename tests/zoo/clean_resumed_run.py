"""Clean: train, checkpoint model + optimizer + scheduler state to an in-memory buffer mid-way,
rebuild fresh objects, load the checkpoint and continue (as a preempted job resumes)."""
import io

import torch
from torch import nn
from torch.nn import functional as F
from _common import SmallCNN, digits, loaders

EXPECT = None


def build():
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def run_epochs(model, opt, sched, train, xva, yva, epochs):
    for epoch in epochs:
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva)
            vl = F.cross_entropy(logits, yva)
        acc = (logits.argmax(1) == yva).float().mean()
        print(f"epoch {epoch} train_loss {loss.item():.4f} val_loss {vl.item():.4f} "
              f"val_acc {acc.item():.3f} lr {sched.get_last_lr()[0]:.4f}")


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = digits()
    train, _ = loaders(xtr, ytr, xva, yva, batch=64)
    model, opt, sched = build()
    monitor = watch(model, opt) if watch else None
    run_epochs(model, opt, sched, train, xva, yva, range(0, 3))

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": 3}, buf)
    print(f"checkpoint saved ({buf.tell() // 1024} KiB); resuming in fresh objects")
    del model, opt, sched

    buf.seek(0)
    ckpt = torch.load(buf)
    model, opt, sched = build()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    run_epochs(model, opt, sched, train, xva, yva, range(ckpt["epoch"], 6))
    return monitor


if __name__ == "__main__":
    main()
