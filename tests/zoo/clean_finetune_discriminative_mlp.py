"""Clean: fine-tuning a pretrained MLP as the recipe says: the head first on the frozen backbone,
then everything with discriminative learning rates (Adam 1e-3 for the head, 10x less per layer
group below it). The model is pretrained here on 10-class digits, then gets a new head for a
5-class relabelling (digit pairs) of 50 other samples. Expect no finding."""
import copy

import torch
import torch.nn.functional as F
from _common import digits, pretrained_mlp

from trainmedic import finetune

EXPECT = None


def main(watch=None):
    xtr, ytr, xva, yva = digits(flat=True)
    model = copy.deepcopy(pretrained_mlp(xtr[:900], ytr[:900]))   # a copy of the pretrained weights
    torch.manual_seed(2)
    finetune.replace_head(model, 5)                  # digit pairs 0-1, 2-3, ... as 5 classes
    xt, yt, xv, yv = xtr[900:950], ytr[900:950] // 2, xva, yva // 2
    opt = torch.optim.Adam(finetune.discriminative_param_groups(model, 1e-3, decay=10))
    finetune.freeze(model, depth=1)                  # the head first, on the frozen backbone
    monitor = watch(model, opt) if watch else None
    for epoch in range(9):
        if epoch == 3:
            finetune.unfreeze(model)
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
