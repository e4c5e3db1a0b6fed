"""Time of the full checkup on the digits CNN (target <= 30 s on CPU), and of the first-batch
checks inside a watched run (target <= 2 s).

    python benchmarks/checkup_time.py
"""

from __future__ import annotations

import io
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainmedic
from trainmedic.demo import DigitsCNN, digits, run_demo
from trainmedic.report.terminal import format_checks


def main() -> None:
    xtr, ytr, xva, yva = digits()
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(xva, yva), batch_size=256)
    for name, make in [("SGD", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4)),
                       ("Adam", lambda p: torch.optim.Adam(p, lr=1e-3))]:
        torch.manual_seed(0)
        model = DigitsCNN()
        start = time.perf_counter()
        report = trainmedic.checkup(model, train, nn.CrossEntropyLoss(), optimizer=make(model.parameters()),
                                    val_loader=val)
        print(f"full checkup, digits CNN, {name}: {time.perf_counter() - start:.2f} s")
        print(format_checks(report))
    start = time.perf_counter()
    report = run_demo(None, epochs=1, out=io.StringIO(), run_dir="/tmp/trainmedic-bench")
    total = time.perf_counter() - start
    checks = sum(c["seconds"] for c in report.run["first_batch_checks"])
    print(f"first-batch checks inside a watched run: {checks * 1e3:.0f} ms (report rounds to 1 ms) "
          f"(the whole 1-epoch demo run: {total:.2f} s)")


if __name__ == "__main__":
    main()
