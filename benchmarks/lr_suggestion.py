"""How the checkup's LR suggestion compares with the best LR of a coarse log-grid of short
trainings, on the digits CNN with SGD (momentum 0.9) and Adam.

    python benchmarks/lr_suggestion.py

For each optimizer: train a copy for two epochs at each grid LR (same init, same batches), take
the LR with the lowest mean training loss over the last epoch, and print it beside every rule's
suggestion and its factor from the best.
"""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainmedic.checks.base import CheckContext
from trainmedic.checks.training import largest_stable_lr, lr_range_test, suggestion
from trainmedic.demo import DigitsCNN, digits


def grid_best(model, make_opt, loader, grid, epochs=2):
    results = {}
    for lr in grid:
        torch.manual_seed(1)
        m = copy.deepcopy(model)
        opt = make_opt(m.parameters(), lr)
        last = []
        for epoch in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(m(x), y)
                loss.backward()
                opt.step()
                if epoch == epochs - 1:
                    last.append(loss.item())
        mean = float(np.mean(last))
        results[lr] = mean if math.isfinite(mean) else float("inf")
    return min(results, key=results.get), results


def main() -> int:
    xtr, ytr, _, _ = digits()
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    worst = 1.0
    for name, make_opt, grid in [
        ("SGD(momentum=0.9)", lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), np.geomspace(1e-4, 3, 10)),
        ("Adam", lambda p, lr: torch.optim.Adam(p, lr=lr), np.geomspace(1e-5, 0.3, 10)),
    ]:
        torch.manual_seed(0)
        model = DigitsCNN()
        opt = make_opt(model.parameters(), 1e-3)
        ctx = CheckContext(model=model, loss_fn=nn.CrossEntropyLoss(), train_loader=loader, optimizer=opt)
        torch.manual_seed(0)
        sweep = lr_range_test(ctx)
        stable = largest_stable_lr(ctx)
        best, losses = grid_best(model, make_opt, loader, grid)
        rules = {"suggested": suggestion(sweep, stable), "valley": sweep["valley"],
                 "steepest": sweep["steepest"], "min_over_10": sweep["min_over_10"],
                 "largest_stable": stable["largest_stable"]}
        print(f"{name}: grid best lr {best:.3g} (grid: " +
              ", ".join(f"{lr:.2g}:{v:.3f}" for lr, v in losses.items()) + ")")
        for rule, lr in rules.items():
            factor = max(lr / best, best / lr)
            print(f"  {rule:18s} {lr:9.3g}  factor {factor:5.2f} from the best")
        worst = max(worst, max(rules["suggested"] / best, best / rules["suggested"]))
    print(f"worst factor of the suggestion: {worst:.2f} (target <= 3)")
    return 0 if worst <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
