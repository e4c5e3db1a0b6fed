"""Peak resident memory and wall time with and without trainmedic (`trainmedic run`).

    python benchmarks/memory.py                      # all scenarios, plain and watched
    python benchmarks/memory.py --only lm --vocab 30000
    python benchmarks/memory.py --scenario lm        # run one scenario's training script itself

Scenarios (data generated here, no downloads):

* ``lm``: a word-level LSTM language model, 30,000-token vocabulary (embedding 64, LSTM hidden
  128, a full softmax head), 100 training steps on (8, 32) token batches, then 60 evaluation
  batches under ``no_grad`` with ``F.cross_entropy`` on (B*T, V) logits.
* ``cnn``: a small image CNN on generated 3x32x32 data, 10 classes, 3 epochs with evaluation.
* ``mlp``: a tiny MLP for 20,000 steps (evaluation every 1,000), and the same for 5,000 steps,
  to see whether anything grows with run length.

Each measurement runs in a fresh wrapper process, which starts the scenario as a subprocess
(``python memory.py --scenario NAME`` plain, or ``python -m trainmedic.cli run --no-live
memory.py --scenario NAME`` watched) and reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss``. The
wrapper also polls the child's RSS and kills it above ``--kill-above-gb`` (default 14), so a
blow-up cannot take the machine down; such a row reads "killed". The target (issue): watched
peak <= plain * 1.1 + 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.abspath(__file__)

# -- the scenarios (run as the training script) ---------------------------------------------------


def scenario_lm(vocab: int, steps: int = 100, eval_batches: int = 60) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    B, T = 8, 32

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, 64)
            self.lstm = nn.LSTM(64, 128, batch_first=True)
            self.head = nn.Linear(128, vocab)

        def forward(self, x):
            return self.head(self.lstm(self.emb(x))[0])

    def batch(g):
        # Half Zipf-like frequent words, half uniform over the vocabulary (rare words).
        zipf = (torch.rand(B, T + 1, generator=g) ** 4 * vocab).long()
        uni = torch.randint(0, vocab, (B, T + 1), generator=g)
        tok = torch.where(torch.rand(B, T + 1, generator=g) < 0.5, zipf, uni)
        return tok[:, :-1], tok[:, 1:]

    model = LM()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = batch(g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        opt.step()
    model.eval()
    total = 0.0
    with torch.no_grad():
        gv = torch.Generator().manual_seed(2)
        for _ in range(eval_batches):
            x, y = batch(gv)
            total += float(F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1)))
    print(f"val loss {total / eval_batches:.3f}")


def scenario_cnn(epochs: int = 3) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    n, classes = 2048, 10
    centers = torch.randn(classes, 3, 32, 32)
    y = torch.randint(0, classes, (n,))
    x = centers[y] * 0.5 + torch.randn(n, 3, 32, 32)
    xv_y = torch.randint(0, classes, (512,))
    xv = centers[xv_y] * 0.5 + torch.randn(512, 3, 32, 32)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 8 * 8, classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = sum(float((model(xv[i:i + 128]).argmax(1) == xv_y[i:i + 128]).sum()) for i in range(0, 512, 128))
            for i in range(0, 512, 128):
                F.cross_entropy(model(xv[i:i + 128]), xv_y[i:i + 128])
    print(f"val acc {acc / 512:.3f}")


def scenario_mlp(steps: int = 20_000, eval_every: int = 1000) -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    w = torch.randn(20, 4)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xv = torch.randn(256, 20)
    yv = (xv @ w).argmax(1)
    for step in range(1, steps + 1):
        x = torch.randn(32, 20)
        opt.zero_grad()
        F.cross_entropy(model(x), (x @ w).argmax(1)).backward()
        opt.step()
        if step % eval_every == 0:
            with torch.no_grad():
                for i in range(0, 256, 64):
                    F.cross_entropy(model(xv[i:i + 64]), yv[i:i + 64])
    print("done")


# -- measurement -----------------------------------------------------------------------------------

WRAPPER = r"""
import json, os, resource, signal, subprocess, sys, threading, time
limit_kb = int(sys.argv[1]); cmd = sys.argv[2:]
t = time.perf_counter()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
killed = [False]
def watchdog():
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as fh:
                rss = next(int(l.split()[1]) for l in fh if l.startswith("VmRSS"))
        except (OSError, StopIteration):
            rss = 0
        if rss > limit_kb:
            killed[0] = True
            p.kill()
            return
        time.sleep(0.05)
threading.Thread(target=watchdog, daemon=True).start()
err = p.stderr.read().decode(errors="replace")
rc = p.wait()
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss    # KiB on Linux
print(json.dumps({"rc": rc, "wall_s": wall, "peak_mb": peak / 1024, "killed": killed[0],
                  "stderr_tail": err[-600:]}))
"""


def measure(cmd: list[str], kill_above_gb: float) -> dict:
    out = subprocess.run([sys.executable, "-c", WRAPPER, str(int(kill_above_gb * 2**20)), *cmd],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scenario_args(name: str, args) -> list[str]:
    if name == "lm":
        return ["--scenario", "lm", "--vocab", str(args.vocab)]
    if name.startswith("mlp"):
        return ["--scenario", "mlp", "--steps", name[3:].replace("k", "000")]
    return ["--scenario", name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["lm", "cnn", "mlp"], help="run this scenario's training itself")
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--steps", type=int, default=20_000, help="mlp: training steps")
    ap.add_argument("--only", action="append", choices=["lm", "cnn", "mlp20k", "mlp5k"],
                    help="measure only these (repeatable)")
    ap.add_argument("--kill-above-gb", type=float, default=14.0,
                    help="kill a measured process whose RSS exceeds this (protects the machine)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if args.scenario == "lm":
        return scenario_lm(args.vocab)
    if args.scenario == "cnn":
        return scenario_cnn()
    if args.scenario == "mlp":
        return scenario_mlp(args.steps)

    rows = []
    names = args.only or ["lm", "cnn", "mlp20k", "mlp5k"]
    print(f"{'scenario':<12} {'plain MB':>9} {'watched MB':>11} {'target MB':>10} {'ok':>4} "
          f"{'plain s':>8} {'watched s':>10} {'report.json':>12}", flush=True)
    for name in names:
        extra = scenario_args(name, args)
        plain = measure([sys.executable, HERE, *extra], args.kill_above_gb)
        with tempfile.TemporaryDirectory() as run_dir:
            watched = measure([sys.executable, "-m", "trainmedic.cli", "run", "--no-live", "--run-dir", run_dir,
                               HERE, *extra], args.kill_above_gb)
            rj = os.path.join(run_dir, "report.json")
            size = os.path.getsize(rj) if os.path.exists(rj) else None
        target = plain["peak_mb"] * 1.1 + 200
        ok = (not watched["killed"]) and watched["rc"] == 0 and watched["peak_mb"] <= target
        row = {"scenario": name, "plain_mb": plain["peak_mb"], "watched_mb": watched["peak_mb"],
               "target_mb": target, "ok": ok, "plain_s": plain["wall_s"], "watched_s": watched["wall_s"],
               "report_bytes": size, "watched_rc": watched["rc"], "killed": watched["killed"]}
        rows.append(row)
        wmb = f"{watched['peak_mb']:.0f}" + (" killed" if watched["killed"] else "")
        print(f"{name:<12} {plain['peak_mb']:>9.0f} {wmb:>11} {target:>10.0f} {'yes' if ok else 'NO':>4} "
              f"{plain['wall_s']:>8.1f} {watched['wall_s']:>10.1f} "
              f"{'-' if size is None else f'{size / 1e3:.0f} kB':>12}", flush=True)
        if watched["rc"] != 0 and not watched["killed"]:
            print("  watched run failed:", watched["stderr_tail"], file=sys.stderr)
    by = {r["scenario"]: r for r in rows}
    if "mlp20k" in by and "mlp5k" in by:
        grow = by["mlp20k"]["watched_mb"] - by["mlp5k"]["watched_mb"]
        base = by["mlp20k"]["plain_mb"] - by["mlp5k"]["plain_mb"]
        print(f"growth with run length (20k vs 5k steps): watched {grow:+.0f} MB, plain {base:+.0f} MB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
