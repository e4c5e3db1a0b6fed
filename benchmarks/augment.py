"""Throughput of trainmedic.augment's image augmentations (and MixUp / CutMix), in images per
second, on one batch of random images.

    python benchmarks/augment.py                          # 256 x 3x32x32 on the CPU
    python benchmarks/augment.py --batch 128 --size 224 --device cuda

Each augmentation runs ``--warmup`` times, then ``--repeats`` timed calls, taking turns with
the others; the table gives the median time per call and the images per second it means. The
thread count is torch's (set OMP_NUM_THREADS to pin it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import trainmedic.augment as A


def augmentations(y: torch.Tensor, g: torch.Generator) -> dict:
    return {
        "hflip (p=0.5)": lambda x: A.hflip(x, generator=g),
        "vflip (p=0.5)": lambda x: A.vflip(x, generator=g),
        "random_resized_crop (scale 0.08–1)": lambda x: A.random_resized_crop(x, generator=g),
        "rotate (±15°)": lambda x: A.rotate(x, generator=g),
        "color_jitter (brightness, contrast, saturation 0.2, hue 0.05)": lambda x: A.color_jitter(x, hue=0.05, generator=g),
        "random_erasing (p=0.5)": lambda x: A.random_erasing(x, generator=g),
        "gaussian_noise (std 0.05)": lambda x: A.gaussian_noise(x, generator=g),
        "translate (up to 1/8 of the side, plain torch)": lambda x: A.translate(x, generator=g),
        "mixup (alpha 0.2)": lambda x: A.mixup(x, y, num_classes=10, generator=g),
        "cutmix (alpha 1)": lambda x: A.cutmix(x, y, num_classes=10, generator=g),
    }


def seconds_per_call(fns: dict, x: torch.Tensor, warmup: int, repeats: int, device: torch.device) -> dict:
    """Median seconds per call of each function; the functions take turns, so that a change of
    the machine's load falls on all of them alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn(x)
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32, help="image side (3 x size x size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator(device).manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    print(f"batch {args.batch} x 3x{args.size}x{args.size} float32 on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} calls\n")
    print("| augmentation | ms per batch | images/s |")
    print("|---|---|---|")
    for name, s in seconds_per_call(augmentations(y, g), x, args.warmup, args.repeats, device).items():
        print(f"| {name} | {s * 1e3:.2f} | {args.batch / s:,.0f} |")


if __name__ == "__main__":
    main()
