"""trainmedic.augment: every augmentation's shape, dtype, device and determinism; label and
padding handling; bad arguments; the preview (and its place in the HTML report); the check that
an augmentation keeps the labels, on a digits model trained here."""

import functools
import io
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainmedic
import trainmedic.augment as A

pytest.importorskip("kornia")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(b=6, c=3, h=16, w=12, seed=0):
    return torch.rand(b, c, h, w, generator=gen(seed))


def token_ids(seed=0):
    """Right-padded rows of token ids 1..49 (pad 0), one row left-padded, one all padding."""
    ids = torch.randint(1, 50, (8, 40), generator=gen(seed))
    for row, length in enumerate([40, 35, 20, 5, 1, 30, 12, 0]):
        ids[row, length:] = 0
    ids[5] = torch.cat([torch.zeros(10, dtype=torch.long), ids[5, :30]])
    return ids


def randn(*shape):
    return lambda seed=0: torch.randn(*shape, generator=gen(seed))


# (function, keyword arguments, input)
CASES = {
    "hflip": (A.hflip, {"p": 0.5}, images),
    "vflip": (A.vflip, {"p": 0.5}, images),
    "random_resized_crop": (A.random_resized_crop, {"scale": (0.2, 0.5)}, images),
    "rotate": (A.rotate, {"degrees": 30.0}, images),
    "color_jitter": (A.color_jitter, {"brightness": 0.4, "saturation": 0.4, "hue": 0.1}, images),
    "random_erasing": (A.random_erasing, {"p": 1.0}, images),
    "gaussian_noise": (A.gaussian_noise, {"std": 0.1}, images),
    "translate": (A.translate, {"max_shift": 2}, images),
    "mixup": (functools.partial(A.mixup, y=torch.arange(6) % 3, num_classes=3), {}, images),
    "cutmix": (functools.partial(A.cutmix, y=torch.arange(6) % 3, num_classes=3), {}, images),
    "drop_tokens": (A.drop_tokens, {"pad_id": 0, "p": 0.3}, token_ids),
    "replace_tokens": (A.replace_tokens, {"pad_id": 0, "vocab_size": 50, "p": 0.3}, token_ids),
    "mask_spans": (A.mask_spans, {"pad_id": 0, "mask_id": 99, "p": 0.3}, token_ids),
    "freq_mask": (A.freq_mask, {"max_width": 6, "count": 2}, randn(4, 20, 30)),
    "time_mask": (A.time_mask, {"max_width": 8}, randn(4, 2, 20, 30)),
    "time_shift": (A.time_shift, {"max_shift": 50}, randn(4, 400)),
    "add_noise": (A.add_noise, {"snr_db": 10.0}, randn(4, 2, 400)),
    "speed_perturb": (A.speed_perturb, {}, randn(4, 400)),
}


def first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", CASES)
def test_shape_dtype_device_and_determinism(name):
    fn, kwargs, make = CASES[name]
    x = make()
    state = torch.get_rng_state()
    out = first(fn(x, **kwargs, generator=gen(1)))
    assert torch.equal(torch.get_rng_state(), state)                # the global RNG is left alone
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)
    assert torch.equal(first(fn(x, **kwargs, generator=gen(1))), out)
    assert not torch.equal(first(fn(x, **kwargs, generator=gen(2))), out)
    g = gen(1)
    assert not torch.equal(first(fn(x, **kwargs, generator=g)), first(fn(x, **kwargs, generator=g)))
    torch.manual_seed(5)
    unseeded = first(fn(x, **kwargs))
    torch.manual_seed(5)
    assert torch.equal(first(fn(x, **kwargs)), unseeded)             # no generator: torch's global RNG


# -- images ----------------------------------------------------------------------------------------

def test_image_transforms_do_what_they_say():
    x = images()
    assert torch.equal(A.hflip(x, p=1.0), x.flip(-1)) and torch.equal(A.vflip(x, p=1.0), x.flip(-2))
    assert torch.equal(A.hflip(x, p=0.0), x)
    batch = images(32)
    half = A.hflip(batch, p=0.5, generator=gen())                       # drawn per sample
    flipped, kept = (half == batch.flip(-1)).flatten(1).all(1), (half == batch).flatten(1).all(1)
    assert (flipped ^ kept).all() and 8 <= flipped.sum() <= 24
    square = images(h=12, w=12)
    assert torch.allclose(A.rotate(square, degrees=(90, 90)), torch.rot90(square, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(A.random_resized_crop(square, scale=(1, 1), ratio=(1, 1)), square, atol=1e-5)
    erased = A.random_erasing(x + 1, p=1.0, value=0.0, generator=gen())
    hole = erased == 0
    assert hole.flatten(1).any(1).all() and torch.equal(erased[~hole], (x + 1)[~hole])
    noise = A.gaussian_noise(torch.zeros(64, 3, 16, 16), std=0.1, generator=gen())
    assert abs(noise.std().item() - 0.1) < 0.005 and abs(noise.mean().item()) < 0.005
    bright = A.color_jitter(x, brightness=0.5, contrast=0, saturation=0, generator=gen())
    assert not torch.equal(bright, x) and 0 <= bright.min() and bright.max() <= 1
    dim = x * 0.6 + 0.05                                                # no clipping at 1.5x
    factor = A.color_jitter(dim, brightness=0.5, contrast=0, saturation=0, generator=gen()) / dim
    per_sample = factor.flatten(1)                                      # one factor per sample, in [0.5, 1.5]
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), rtol=1e-4)
    assert ((per_sample >= 0.5) & (per_sample <= 1.5)).all() and per_sample[:, 0].unique().numel() == len(x)
    assert A.color_jitter(images(c=1), saturation=0, generator=gen()).shape == (6, 1, 16, 12)


def test_translate_shifts_each_image_by_whole_pixels_and_repeats_the_edges():
    x = images(32, h=12, w=12)
    out = A.translate(x, max_shift=2, generator=gen())
    shifts = []
    for i in range(len(x)):          # which shift each sample got: its interior is the original, moved
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(out[i, :, 2:-2, 2:-2], x[i, :, 2 - dy:10 - dy, 2 - dx:10 - dx])]
        assert len(found) == 1, i
        shifts.append(found[0])
    dy, dx = map(torch.tensor, zip(*shifts))
    assert dy.unique().numel() > 1 and dx.unique().numel() > 1          # drawn per sample
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i, (a, b) in enumerate(shifts):       # the whole image, the edge pixels repeated included
        assert torch.equal(out[i], padded[i, :, 2 - a:14 - a, 2 - b:14 - b]), i
    assert any(a != 0 and b != 0 for a, b in shifts)
    assert torch.equal(A.translate(x, p=0.0), x)
    one = A.translate(torch.zeros(64, 1, 8, 8).index_fill_(3, torch.tensor([3]), 1.0), max_shift=0.125,
                      generator=gen())
    assert set(one.sum((1, 2)).argmax(1).tolist()) == {2, 3, 4}      # a fraction of the side: 1 px of 8


@pytest.mark.parametrize("call, match", [
    (lambda: A.translate(images(), max_shift=0), r"max_shift=0 is not valid; expected a number of pixels"),
    (lambda: A.translate(images(), max_shift=1.5), r"max_shift=1.5 is not valid"),
    (lambda: A.hflip(torch.rand(3, 8, 8)), r"x has shape \(3, 8, 8\); expected .*\(B, C, H, W\)"),
    (lambda: A.rotate(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), r"x has dtype torch.uint8; expected a floating"),
    (lambda: A.vflip([[0.0]]), r"x is a list; expected a tensor"),
    (lambda: A.hflip(images(), p=1.5), r"p=1.5 is not valid; expected a number in \[0, 1\]"),
    (lambda: A.random_resized_crop(images(), scale=(0.5, 0.2)), r"scale=\(0.5, 0.2\) is not valid"),
    (lambda: A.random_erasing(images(), ratio=(0, 1)), r"ratio=\(0, 1\) is not valid; expected a pair"),
    (lambda: A.rotate(images(), degrees=math.nan), r"degrees=nan is not valid"),
    (lambda: A.color_jitter(images(c=1)), r"x has 1 channels; saturation=0.2 .* need RGB"),
    (lambda: A.gaussian_noise(images(), std=-1), r"std=-1 is not valid"),
    (lambda: A.hflip(images(), generator=0), r"generator=0 is not valid; expected a torch.Generator"),
])
def test_image_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_kornia_is_imported_on_first_use_only(monkeypatch):
    code = "import sys, trainmedic, trainmedic.augment; assert 'kornia' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "kornia", None)                     # as if not installed
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    with pytest.raises(ImportError, match=r"pip install 'trainmedic\[augment\]'"):
        A.hflip(images())
    assert A.mixup(images(), torch.zeros(6, dtype=torch.long), num_classes=2)[0].shape == (6, 3, 16, 12)


# -- MixUp, CutMix -----------------------------------------------------------------------------------

def test_mixup_targets_are_the_mixing_weights():
    y = torch.tensor([0, 1, 2, 3, 4, 2, 1, 0])
    onehot = F.one_hot(y, 5).float()
    x = onehot[:, :, None, None].expand(8, 5, 3, 3)            # each input is its own one-hot label
    mixed, soft = A.mixup(x, y, num_classes=5, alpha=0.4, generator=gen())
    assert soft.shape == (8, 5) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(1), torch.ones(8))
    assert torch.allclose(mixed[:, :, 1, 2], soft, atol=1e-6)
    assert ((soft > 0) & (soft < 1)).any()
    assert soft.max(1).values.unique().numel() > 2                      # a mixing weight per sample
    flat, soft2 = A.mixup(onehot, y, num_classes=5, alpha=0.4, generator=gen())       # any shape (B, ...)
    assert torch.allclose(flat, soft2, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 3, 10, 14), (16, 12, 9)])
def test_cutmix_targets_are_the_pasted_areas(shape):
    B = shape[0]
    x = torch.arange(B, dtype=torch.float32).reshape(B, *[1] * (len(shape) - 1)).expand(shape)
    mixed, soft = A.cutmix(x, torch.arange(B), num_classes=B, alpha=1.0, generator=gen(3))
    assert torch.allclose(soft.sum(1), torch.ones(B))
    area = torch.stack([(mixed == j).float().mean(tuple(range(1, len(shape)))) for j in range(B)], 1)
    assert torch.allclose(area, soft, atol=1e-6)
    assert ((soft > 0) & (soft < 1)).sum() >= B // 2                   # most samples really mixed
    boxes = mixed[:, 0] if len(shape) == 4 else mixed               # the pasted part is one rectangle
    for i in range(B):
        rows, cols = (boxes[i] != i).any(1), (boxes[i] != i).any(0)
        assert (boxes[i] != i).sum() == rows.sum() * cols.sum()


def test_soft_targets_train_with_cross_entropy():
    logits = torch.randn(8, 4, generator=gen())
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    _, soft = A.mixup(torch.randn(8, 5), y, num_classes=4, generator=gen())
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(F.cross_entropy(logits, soft), expected)


@pytest.mark.parametrize("call, match", [
    (lambda: A.mixup(images(), torch.zeros(6, dtype=torch.long), num_classes=3, alpha=0),
     r"alpha=0 is not valid; expected a number in \(0, inf\)"),
    (lambda: A.mixup(images(), torch.zeros(6, dtype=torch.long), num_classes=3, alpha=math.inf), r"alpha=inf"),
    (lambda: A.cutmix(images(), torch.zeros(6, dtype=torch.long), num_classes=3, alpha=-1), r"alpha=-1 is not valid"),
    (lambda: A.mixup(images(), torch.tensor([0, 1, 2, 3, 4, 10]), num_classes=10),
     r"y has the label 10; expected labels from 0 to num_classes-1 \(num_classes=10\)"),
    (lambda: A.cutmix(images(), torch.tensor([0, 1, 2, 3, 4, -1]), num_classes=10), r"y has the label -1"),
    (lambda: A.mixup(images(), torch.zeros(5, dtype=torch.long), num_classes=3), r"y has 5 labels for a batch of 6"),
    (lambda: A.mixup(images(), torch.zeros(6), num_classes=3), r"y has dtype torch.float32; expected an integer"),
    (lambda: A.mixup(images(), torch.zeros(6, dtype=torch.long), num_classes=0), r"num_classes=0 is not valid"),
    (lambda: A.cutmix(torch.rand(6, 8), torch.zeros(6, dtype=torch.long), num_classes=3),
     r"x has shape \(6, 8\); expected .*\(B, ..., H, W\)"),
])
def test_mix_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# -- text ------------------------------------------------------------------------------------------

def test_drop_tokens_deletes_and_closes_the_gaps():
    ids = token_ids()
    out = A.drop_tokens(ids, pad_id=0, p=0.3, generator=gen())
    pad = ids == 0
    assert torch.equal(out[pad], ids[pad])                               # padding stays padding
    before, after = (~pad).sum(1), (out != 0).sum(1)
    assert (after <= before).all() and (after[before > 0] >= 1).all()    # never empties a row
    assert 0.15 < 1 - after.sum() / before.sum() < 0.45
    for row in range(len(ids)):
        kept, original = out[row][out[row] != 0].tolist(), ids[row][~pad[row]].tolist()
        it = iter(original)
        assert all(t in it for t in kept)                                # a subsequence, in order
        slots = (~pad[row]).nonzero().flatten()
        assert (out[row, slots[:len(kept)]] != 0).all()                  # kept tokens fill the first slots
    assert torch.equal(A.drop_tokens(ids, pad_id=0, p=0.0), ids)


def test_replace_tokens_counts_tokens_only_and_never_writes_pad():
    ids = token_ids()
    out = A.replace_tokens(ids, pad_id=0, vocab_size=50, p=0.5, generator=gen())
    pad = ids == 0
    assert torch.equal(out[pad], ids[pad]) and (out[~pad] != 0).all()
    assert out.min() >= 0 and out.max() < 50
    assert 0.35 < (out != ids)[~pad].float().mean() < 0.55             # p of the tokens (padding not counted)
    assert (A.replace_tokens(ids, pad_id=0, vocab_size=2, p=1.0, generator=gen())[~pad] == 1).all()


def test_mask_spans_masks_runs_of_tokens():
    ids = torch.randint(1, 50, (64, 200), generator=gen())
    ids[:, 150:] = 0
    out = A.mask_spans(ids, pad_id=0, mask_id=99, p=0.15, span=4, generator=gen())
    assert torch.equal(out[:, 150:], ids[:, 150:])
    masked = out == 99
    assert torch.equal(out[~masked], ids[~masked])
    assert 0.12 < masked[:, :150].float().mean() < 0.18
    for row in masked[:, :150].tolist():               # runs inside the tokens are at least one span long
        runs = "".join("1" if m else "0" for m in row).split("0")
        assert all(len(r) >= 4 for r in runs[1:-1] if r)


@pytest.mark.parametrize("call, match", [
    (lambda: A.drop_tokens(token_ids().float(), pad_id=0), r"ids has dtype torch.float32; expected an integer"),
    (lambda: A.replace_tokens(token_ids()[0], pad_id=0, vocab_size=50), r"ids has shape \(40,\); expected .*\(B, L\)"),
    (lambda: A.mask_spans(token_ids(), pad_id=0, mask_id=0),
     r"mask_id=0 is not valid; expected an id other than pad_id"),
    (lambda: A.mask_spans(token_ids(), pad_id=0, mask_id=9, span=0), r"span=0 is not valid; expected an int >= 1"),
    (lambda: A.drop_tokens(token_ids(), pad_id=0, p=-0.1), r"p=-0.1 is not valid"),
    (lambda: A.replace_tokens(token_ids(), pad_id=0, vocab_size=1), r"vocab_size=1 is not valid"),
    (lambda: A.drop_tokens(token_ids(), pad_id=None), r"pad_id=None is not valid; expected an int"),
])
def test_text_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# -- audio -----------------------------------------------------------------------------------------

def test_spec_masks_are_bands_across_the_other_axis():
    spec = torch.rand(8, 2, 20, 30) + 1
    out = A.freq_mask(spec, max_width=5, count=2, generator=gen())
    masked = out == 0
    assert torch.equal(masked, masked[:, :1, :, :1].expand_as(masked))   # whole bins, every channel
    assert masked[:, 0, :, 0].sum(1).max() <= 10 and masked.any()
    out = A.time_mask(spec, max_width=30, count=1, value=-1.0, generator=gen())
    frames = (out == -1)[:, 0, 0]
    assert torch.equal(out == -1, frames[:, None, None, :].expand_as(out))
    for row in frames.tolist():                                          # one run of frames
        assert "".join("1" if m else "0" for m in row).strip("0").count("0") == 0


def test_time_shift_rolls_or_pads_each_sample():
    wave = torch.randn(6, 100, generator=gen())
    out = A.time_shift(wave, max_shift=10, generator=gen())
    shifts = [next(s for s in range(-10, 11) if torch.equal(out[i], wave[i].roll(s))) for i in range(6)]
    assert len(set(shifts)) > 1
    out = A.time_shift(wave, max_shift=10, rollover=False, generator=gen())
    for i, s in enumerate(shifts):                                       # same draws, zeros instead
        expected = torch.zeros(100)
        expected[max(s, 0):100 + min(s, 0)] = wave[i, max(-s, 0):100 - max(s, 0)]
        assert torch.equal(out[i], expected)


def test_add_noise_hits_the_snr():
    wave = torch.randn(5, 2, 1000, generator=gen()) * torch.tensor([0.1, 1, 3, 10, 100])[:, None, None]
    for snr in (20.0, 0.0, -5.0):
        noise = A.add_noise(wave, snr_db=snr, generator=gen()) - wave
        measured = 10 * torch.log10(wave.pow(2).mean((1, 2)) / noise.pow(2).mean((1, 2)))
        assert torch.allclose(measured, torch.full((5,), snr), atol=1e-3)
    hum = torch.sin(torch.arange(1000.0))[None, None].expand(5, 2, 1000)
    noise = A.add_noise(wave, snr_db=(5.0, 15.0), noise=hum, generator=gen()) - wave
    measured = 10 * torch.log10(wave.pow(2).mean((1, 2)) / noise.pow(2).mean((1, 2)))
    assert ((measured > 5 - 1e-3) & (measured < 15 + 1e-3)).all() and measured.std() > 0.5
    assert torch.allclose(noise / noise[:, :1, 1:2], hum / hum[:, :1, 1:2], atol=1e-4)      # the noise given
    assert torch.equal(A.add_noise(torch.zeros(2, 50), snr_db=10.0), torch.zeros(2, 50))


def test_speed_perturb_resamples_and_keeps_the_length():
    wave = torch.arange(100.0).repeat(3, 2, 1)
    assert torch.equal(A.speed_perturb(wave, factors=(1, 1)), wave)
    fast = A.speed_perturb(wave, factors=(2, 2))
    assert torch.equal(fast[..., :50], wave[..., ::2]) and (fast[..., 50:] == 0).all()
    slow = A.speed_perturb(wave, factors=(0.5, 0.5))
    assert torch.allclose(slow, torch.arange(100.0) / 2)
    varied = A.speed_perturb(wave, factors=(0.8, 1.2), generator=gen())
    assert len({round(float(varied[i, 0, 10] / 10), 4) for i in range(3)}) == 3      # a speed per sample


@pytest.mark.parametrize("call, match", [
    (lambda: A.add_noise(torch.randn(2, 50), snr_db=math.nan), r"snr_db=nan is not valid; expected a number"),
    (lambda: A.add_noise(torch.randn(2, 50), snr_db=(10, 5)), r"snr_db=\(10, 5\) is not valid"),
    (lambda: A.add_noise(torch.randn(2, 50), snr_db=5, noise=torch.randn(2, 40)), r"noise has shape \(2, 40\)"),
    (lambda: A.speed_perturb(torch.randn(50), factors=(0.9, 1.1)), r"wave has shape \(50,\); expected .*\(B, T\)"),
    (lambda: A.speed_perturb(torch.randn(2, 50), factors=(0, 1.1)), r"factors=\(0, 1.1\) is not valid"),
    (lambda: A.time_shift(torch.randn(2, 50), max_shift=-1), r"max_shift=-1 is not valid"),
    (lambda: A.freq_mask(torch.randn(2, 50), max_width=3), r"spec has shape \(2, 50\); expected .*\(B, F, T\)"),
    (lambda: A.time_mask(torch.randn(2, 5, 50), max_width=2.5), r"max_width=2.5 is not valid"),
])
def test_audio_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# -- preview ---------------------------------------------------------------------------------------

def test_preview_writes_a_png_grid(tmp_path):
    import matplotlib.image

    x, y = images(20, h=8, w=8), torch.arange(20) % 10
    png = A.preview(lambda x: A.rotate(x, degrees=30), x, y, path=tmp_path / "p.png")
    assert png.startswith(b"\x89PNG") and (tmp_path / "p.png").read_bytes() == png
    grid = matplotlib.image.imread(tmp_path / "p.png")
    assert grid.shape[:2] == (480, 832)                  # 16 samples: 8 columns, 2 x (originals, augmented)
    small = A.preview(functools.partial(A.cutmix, num_classes=10), x, y, n=3)
    assert matplotlib.image.imread(io.BytesIO(small)).shape[:2] == (240, 312)
    assert A.preview(A.freq_mask, torch.randn(4, 20, 30)).startswith(b"\x89PNG")
    same, inverted = (matplotlib.image.imread(io.BytesIO(A.preview(f, x, n=8)))
                      for f in (lambda x: x, lambda x: 1 - x))
    assert same.shape == inverted.shape == (240, 832, 4)                 # originals on top, augment's output below
    assert (same[:120] == inverted[:120]).all() and (same[120:] != inverted[120:]).any(-1).mean() > 0.1
    assert A.preview(functools.partial(A.add_noise, snr_db=5.0), torch.randn(4, 300)).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match=r"x has shape \(2, 1, 1, 4, 4\); expected"):
        A.preview(A.hflip, torch.rand(2, 1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"augment takes \(x, y\) .*; pass y"):
        A.preview(functools.partial(A.mixup, num_classes=10), x)
    with pytest.raises(ValueError, match=r"n=0 is not valid"):
        A.preview(A.hflip, x, n=0)


def _watched_run(tmp_path, name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, every=1, run_dir=tmp_path / name, on_finding=lambda f: None)
    x, y = images(16, h=8, w=8), torch.arange(16) % 4
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(A.hflip(x)), y).backward()
        opt.step()
    return monitor, x, y


def test_report_shows_the_preview_only_when_given(tmp_path):
    monitor, x, y = _watched_run(tmp_path, "plain")
    monitor.report(html=tmp_path / "plain.html")
    assert "Augmentation:" not in (tmp_path / "plain.html").read_text()
    monitor, x, y = _watched_run(tmp_path, "augmented")
    monitor.preview_augmentation(A.hflip, x, y, n=4)
    monitor.report(html=tmp_path / "augmented.html")
    html = (tmp_path / "augmented.html").read_text()
    assert "<h2>Augmentation: hflip (originals above what the model is fed)</h2>" in html
    run = json.loads((tmp_path / "augmented" / "report.json").read_text())["run"]
    assert run["augmentation"]["samples"] == 4 and run["augmentation"]["preview"] in html


# -- does the augmentation keep the labels? -------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_model():
    """An MLP on sklearn's 8x8 digits: about 92% held-out accuracy after a second of training."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    return model, x[1400:], y[1400:]


def test_label_check_separates_label_changing_augmentations(digits_model):
    model, x, y = digits_model
    model.train()
    model[3].eval()                                                      # a module's own mode is kept too
    noise = A.check_label_preservation(model, lambda x: A.gaussian_noise(x, std=0.03, generator=gen()), x, y)
    assert noise.clean_acc > 0.9 and noise.gap < 0.05 and noise.verdict == "preserved"
    for augment in (lambda x: A.vflip(x, p=1.0), lambda x: A.rotate(x, degrees=(90, 90))):
        result = A.check_label_preservation(model, augment, x, y, batch_size=100)
        assert result.gap > 0.4 and result.verdict == "changed" and "changes the labels" in result.message
        assert result.clean_acc == noise.clean_acc
    assert model.training and model[1].training and not model[3].training
    untrained = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert A.check_label_preservation(untrained, lambda x: A.vflip(x, p=1.0), x, y).verdict == "inconclusive"
    with pytest.raises(ValueError, match=r"y has 3 labels for 397 samples"):
        A.check_label_preservation(model, A.hflip, x, y[:3])
    with pytest.raises(ValueError, match=r"tolerance=2 is not valid"):
        A.check_label_preservation(model, A.hflip, x, y, tolerance=2)
