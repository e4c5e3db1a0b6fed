"""Clean: full-batch L-BFGS with a closure (strong-Wolfe line search) fitting a small MLP to
the breast-cancer data with a little L2, BCE-with-logits."""
import torch
from torch import nn
from torch.nn import functional as F
from _common import breast_cancer

EXPECT = None


def main(watch=None):
    torch.manual_seed(0)
    xtr, ytr, xva, yva = breast_cancer()
    model = nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=20, history_size=10,
                            line_search_fn="strong_wolfe")
    monitor = watch(model, opt) if watch else None
    l2 = 1e-3

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(xtr).squeeze(1), ytr)
        loss = loss + l2 * sum(p.pow(2).sum() for n, p in model.named_parameters()
                               if n.endswith("weight"))
        loss.backward()
        return loss

    for it in range(10):
        loss = opt.step(closure)
        model.eval()
        with torch.no_grad():
            logits = model(xva).squeeze(1)
            vl = F.binary_cross_entropy_with_logits(logits, yva)
        model.train()
        acc = ((logits > 0).float() == yva).float().mean()
        print(f"outer step {it} train_loss {loss.item():.4f} val_loss {vl.item():.4f} "
              f"val_acc {acc.item():.3f}")
    return monitor


if __name__ == "__main__":
    main()
