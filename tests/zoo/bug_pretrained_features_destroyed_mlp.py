"""Bug: the head is trained on the frozen backbone at Adam's usual lr=1e-3, then the backbone is
unfrozen and every layer gets lr=0.1 (100x that, far too high for fine-tuning): the pretrained
features are wrecked within a few steps and validation falls below what the frozen backbone plus
the new head gave.
The model is pretrained here on 10-class digits, then gets a new head for a 5-class relabelling
(digit pairs) of 50 other samples, following the usual recipe (head first on the frozen
backbone, then everything). Expect pretrained_features_destroyed (root cause)."""
import copy

import torch
import torch.nn.functional as F
from _common import digits, pretrained_mlp

from trainmedic import finetune

EXPECT = "pretrained_features_destroyed"
LR = 0.1                 # 100x Adam's usual 1e-3


def main(watch=None):
    xtr, ytr, xva, yva = digits(flat=True)
    model = copy.deepcopy(pretrained_mlp(xtr[:900], ytr[:900]))   # a copy of the pretrained weights
    torch.manual_seed(2)
    finetune.replace_head(model, 5)                  # digit pairs 0-1, 2-3, ... as 5 classes
    xt, yt, xv, yv = xtr[900:950], ytr[900:950] // 2, xva, yva // 2
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    finetune.freeze(model, depth=1)                  # the head first, on the frozen backbone
    monitor = watch(model, opt) if watch else None
    for epoch in range(9):
        if epoch == 3:
            finetune.unfreeze(model)
            for group in opt.param_groups:
                group["lr"] = LR
        model.train()
        for i in range(0, len(yt), 10):
            opt.zero_grad()
            F.cross_entropy(model(xt[i:i + 10]), yt[i:i + 10]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(xv)
            val_loss = F.cross_entropy(out, yv).item()
            acc = (out.argmax(1) == yv).float().mean().item()
        print(f"epoch {epoch} val_loss {val_loss:.3f} val_acc {acc:.3f}")
    return monitor


if __name__ == "__main__":
    main()
