"""Training-step time with and without trainmedic's monitor (default settings).

    python benchmarks/overhead.py                          # digits CNN on CPU, 1500 steps
    python benchmarks/overhead.py --model resnet50 --device cuda --batch 128 --bf16
    python benchmarks/overhead.py --model small-cnn --device cuda
    python benchmarks/overhead.py --model lstm-lm --batch 20 --steps 300   # a language model
    python benchmarks/overhead.py --scripts tests/zoo/clean_charlm.py ...  # whole process
    python benchmarks/overhead.py --compile                 # the model under torch.compile
    python benchmarks/overhead.py --framework lightning     # Trainer.fit with and without the callback
    python benchmarks/overhead.py --framework hf            # transformers.Trainer, likewise

Plain runs, watched runs and watched runs without the data checks on the stream alternate; each takes the median of several repeats of `--steps` steps
after a warm-up, and the ratio watched/plain is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import trainmedic
from trainmedic.demo import DigitsCNN


class WordLM(nn.Module):
    """Embedding 200, LSTM 200 (batch first), a full softmax head; logits flattened to
    (batch * time, vocab) for the loss."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb, self.lstm, self.head = nn.Embedding(vocab, 200), nn.LSTM(200, 200, batch_first=True), nn.Linear(200, vocab)

    def forward(self, x):
        return self.head(self.lstm(self.emb(x))[0]).reshape(-1, self.head.out_features)


def build(name: str):
    if name == "digits-cnn":
        return DigitsCNN(), (1, 8, 8), 10
    if name == "small-cnn":
        model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
                              nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1),
                              nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        return model, (3, 32, 32), 10
    if name == "lstm-lm":                    # a word-level LM: PyTorch's example, 10k vocabulary
        return WordLM(10_000), (35,), 10_000
    if name == "resnet50":
        import torchvision
        return torchvision.models.resnet50(), (3, 224, 224), 1000
    raise SystemExit(f"--model {name!r}: expected digits-cnn, small-cnn, lstm-lm or resnet50")


def timed(model, opt, x, y, steps, bf16, device, watch, without=(), repair=False):
    """Seconds per step of ``model`` (a torch.compile wrapper is watched through its module)."""
    monitor = trainmedic.watch(getattr(model, "_orig_mod", model), opt, on_finding=lambda f: None,
                               run_dir="/tmp/trainmedic-bench", repair=repair) if watch else None
    for piece in without:                       # switch a piece of trainmedic off, as an error would
        monitor.guard.disabled[piece] = "benchmark"
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    for _ in range(10):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    if monitor is not None:
        monitor.close()
    return elapsed / steps


def framework(name: str, steps: int, repeats: int, batch: int) -> None:
    """Wall time of a framework's fit of ``steps`` steps of the digits CNN on random data,
    without and with trainmedic's callback (setup included in both), medians of alternating
    runs."""
    import tempfile
    from torch.utils.data import DataLoader, TensorDataset
    data = TensorDataset(torch.randn(batch * 50, 1, 8, 8), torch.randint(0, 10, (batch * 50,)))

    def lightning(callback: bool) -> float:
        import lightning.pytorch as pl
        from trainmedic.integrations.lightning import TrainmedicCallback

        class Module(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = DigitsCNN()

            def training_step(self, b, _i):
                return nn.functional.cross_entropy(self.net(b[0]), b[1])

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        cbs = [TrainmedicCallback(on_finding=lambda f: None, run_dir=tempfile.mkdtemp())] if callback else []
        trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, callbacks=cbs)
        t = time.perf_counter()
        trainer.fit(Module(), DataLoader(data, batch_size=batch, shuffle=True))
        return time.perf_counter() - t

    def hf(callback: bool) -> float:
        from transformers import PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments
        from transformers.modeling_outputs import SequenceClassifierOutput
        from trainmedic.integrations.huggingface import TrainmedicCallback

        class Config(PretrainedConfig):
            model_type = "trainmedic-bench"

        class Model(PreTrainedModel):
            config_class = Config

            def __init__(self, config):
                super().__init__(config)
                self.net = DigitsCNN()

            def forward(self, pixels, labels=None):
                logits = self.net(pixels)
                return SequenceClassifierOutput(loss=nn.functional.cross_entropy(logits, labels), logits=logits)
        rows = [{"pixels": x, "labels": int(y)} for x, y in data]
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True, max_steps=steps,
                                 per_device_train_batch_size=batch, save_strategy="no", logging_strategy="no",
                                 disable_tqdm=True)
        cbs = [TrainmedicCallback(on_finding=lambda f: None, run_dir=tempfile.mkdtemp())] if callback else []
        trainer = Trainer(model=Model(Config()), args=args, train_dataset=rows, callbacks=cbs)
        t = time.perf_counter()
        trainer.train()
        return time.perf_counter() - t

    fit = {"lightning": lightning, "hf": hf}[name]
    fit(False)                                             # imports and first-time setup
    plain, watched = [], []
    for _ in range(repeats):
        plain.append(fit(False))
        watched.append(fit(True))
    p, w = statistics.median(plain), statistics.median(watched)
    print(f"framework={name} steps={steps} batch={batch} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"plain   {p / steps * 1e3:.3f} ms/step ({p:.2f} s per fit)")
    print(f"watched {w / steps * 1e3:.3f} ms/step ({w:.2f} s per fit)")
    print(f"ratio   {w / p:.3f}x")


def whole_process(scripts: list[str], repeats: int) -> None:
    """Wall time of `python SCRIPT` against `python -m trainmedic.cli run --no-live SCRIPT`
    (imports, data, training, report: what a user waits for), medians of alternating runs."""
    import os
    import subprocess
    import sys
    import tempfile
    ratios = []
    for script in map(os.path.abspath, scripts):
        times: dict[str, list[float]] = {"plain": [], "watched": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                for kind, cmd in (("plain", [sys.executable, script]),
                                  ("watched", [sys.executable, "-m", "trainmedic.cli", "run", "--no-live", script])):
                    t = time.perf_counter()
                    subprocess.run(cmd, cwd=tmp, capture_output=True, check=True,
                                   env={**os.environ, "PYTHONPATH": os.path.dirname(script)})
                    times[kind].append(time.perf_counter() - t)
        p, w = statistics.median(times["plain"]), statistics.median(times["watched"])
        ratios.append(w / p)
        print(f"{os.path.basename(script):40} plain {p:6.2f} s  watched {w:6.2f} s  {w / p:.3f}x")
    print(f"median {statistics.median(ratios):.3f}x over {len(ratios)} scripts")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scripts", nargs="+", help="whole-process mode: time these training scripts "
                                                 "plain and under `trainmedic run`")
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--repair", action="store_true",
                    help="also time a watched arm with repair=True (snapshots at healthy ticks)")
    ap.add_argument("--compile", action="store_true", help="run the model under torch.compile")
    ap.add_argument("--framework", choices=["lightning", "hf"],
                    help="time a Lightning / Hugging Face fit with and without the callback (CPU)")
    args = ap.parse_args()
    if args.scripts:
        whole_process(args.scripts, args.repeats)
        return
    if args.framework:
        framework(args.framework, args.steps, args.repeats, args.batch)
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, shape, classes = build(args.model)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if args.compile:
        model = torch.compile(model)
    if args.model == "lstm-lm":
        x = torch.randint(0, classes, (args.batch, *shape), device=device)
        y = torch.randint(0, classes, (args.batch * shape[0],), device=device)
    else:
        x = torch.randn(args.batch, *shape, device=device)
        y = torch.randint(0, classes, (args.batch,), device=device)
    plain, watched, no_data, repaired = [], [], [], []
    for _ in range(args.repeats):
        if args.repair:
            repaired.append(timed(model, opt, x, y, args.steps, args.bf16, device, watch=True, repair=True))
        plain.append(timed(model, opt, x, y, args.steps, args.bf16, device, watch=False))
        watched.append(timed(model, opt, x, y, args.steps, args.bf16, device, watch=True))
        no_data.append(timed(model, opt, x, y, args.steps, args.bf16, device, watch=True,
                             without=("data checks", "batch-mixing probe")))
    p, w, n = statistics.median(plain), statistics.median(watched), statistics.median(no_data)
    print(f"model={args.model} device={args.device} batch={args.batch} bf16={args.bf16} compile={args.compile} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"plain   {p * 1e3:.3f} ms/step")
    print(f"watched {w * 1e3:.3f} ms/step")
    print(f"ratio   {w / p:.3f}x")
    print(f"data checks on the stream: {(w - n) / p:+.1%} of the plain step time "
          f"(watched without them: {n * 1e3:.3f} ms/step)")
    if repaired:
        r = statistics.median(repaired)
        print(f"watched with repair=True (snapshots): {r * 1e3:.3f} ms/step, {r / p:.3f}x")


if __name__ == "__main__":
    main()
