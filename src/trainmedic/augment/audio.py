"""Audio augmentations, batched: SpecAugment masking on spectrograms ``(B, F, T)`` or ``(B, C,
F, T)``; time shift, noise and speed on waveforms ``(B, T)`` or ``(B, C, T)``. Plain torch
(torchaudio is not needed). ``generator``: see :mod:`trainmedic.augment`."""

from __future__ import annotations

import torch

from trainmedic.augment._common import check_int, check_interval, check_number, check_tensor, seeded

SPECTROGRAMS = "of spectrograms (B, F, T) or (B, C, F, T)"
WAVEFORMS = "of waveforms (B, T) or (B, C, T)"


def _mask(spec: torch.Tensor, axis: int, max_width: int, count: int, value: float,
          generator: torch.Generator | None) -> torch.Tensor:
    check_tensor("spec", spec, (3, 4), SPECTROGRAMS)
    check_int("max_width", max_width, 0)
    check_int("count", count, 0)
    check_number("value", value)
    B, size = len(spec), spec.shape[axis]
    with seeded(generator, spec.device):
        width = torch.randint(min(max_width, size) + 1, (B, count, 1), device=spec.device)
        start = (torch.rand(B, count, 1, device=spec.device) * (size - width + 1)).floor()
    position = torch.arange(size, device=spec.device)
    masked = ((position >= start) & (position < start + width)).any(1)          # (B, size)
    shape = [B] + [1] * (spec.ndim - 1)
    shape[axis] = size
    return spec.masked_fill(masked.reshape(shape), value)


def freq_mask(spec: torch.Tensor, *, max_width: int = 27, count: int = 1, value: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment frequency masking: ``count`` bands of ``[0, max_width]`` bins (uniform) set to
    ``value``, drawn per sample (the same for every channel)."""
    return _mask(spec, -2, max_width, count, value, generator)


def time_mask(spec: torch.Tensor, *, max_width: int = 100, count: int = 1, value: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment time masking: ``count`` runs of ``[0, max_width]`` frames set to ``value``."""
    return _mask(spec, -1, max_width, count, value, generator)


def _gather_time(wave: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``wave[b, ..., index[b, t]]``; ``index`` (B, T)."""
    index = index.reshape(len(wave), *[1] * (wave.ndim - 2), -1).expand(wave.shape)
    return wave.gather(-1, index)


def time_shift(wave: torch.Tensor, *, max_shift: int, rollover: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each sample by a number of steps drawn uniformly from ``[-max_shift, max_shift]``
    (later for a positive shift); what leaves one end comes back at the other (``rollover``) or
    is replaced by silence."""
    check_tensor("wave", wave, (2, 3), WAVEFORMS)
    check_int("max_shift", max_shift, 0)
    T = wave.shape[-1]
    with seeded(generator, wave.device):
        shift = torch.randint(-max_shift, max_shift + 1, (len(wave), 1), device=wave.device)
    source = torch.arange(T, device=wave.device) - shift
    if rollover:
        return _gather_time(wave, source % T)
    inside = (source >= 0) & (source < T)
    return _gather_time(wave, source.clamp(0, T - 1)) * inside.reshape(len(wave), *[1] * (wave.ndim - 2), T)


def add_noise(wave: torch.Tensor, *, snr_db: "float | tuple[float, float]", noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Add ``noise`` (default: white Gaussian noise) scaled per sample to a signal-to-noise ratio
    of ``snr_db`` decibels (mean powers over the sample), or one drawn uniformly from ``snr_db``
    when it is a pair. Works on any batch ``(B, ...)``."""
    check_tensor("wave", wave, tuple(range(2, 9)), "of signals (B, ...)")
    low, high = (check_interval("snr_db", snr_db, -200, 200) if isinstance(snr_db, (tuple, list))
                 else (check_number("snr_db", snr_db, -200, 200),) * 2)
    if noise is not None:
        check_tensor("noise", noise, (wave.ndim,), f"shaped as wave {tuple(wave.shape)}")
        if noise.shape != wave.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected wave's shape {tuple(wave.shape)}")
    with seeded(generator, wave.device):
        snr = low + (high - low) * torch.rand(len(wave), device=wave.device)
        if noise is None:
            noise = torch.randn_like(wave)
    dims = tuple(range(1, wave.ndim))
    power = wave.pow(2).mean(dims)
    noise_power = noise.pow(2).mean(dims).clamp_min(torch.finfo(noise.dtype).tiny)
    scale = (power / (noise_power * 10 ** (snr / 10))).sqrt()
    return wave + scale.to(wave.dtype).reshape(-1, *[1] * (wave.ndim - 1)) * noise


def speed_perturb(wave: torch.Tensor, *, factors: tuple[float, float] = (0.9, 1.1),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Speed perturbation: each sample played at a speed drawn uniformly from ``factors`` (1.1:
    10% faster, higher pitched), by linear interpolation (no anti-aliasing filter: keep the
    factors near 1). The length stays T: a faster sample ends in silence, a slower one is cut."""
    check_tensor("wave", wave, (2, 3), WAVEFORMS)
    low, high = check_interval("factors", factors, 0, low_open=True)
    T = wave.shape[-1]
    with seeded(generator, wave.device):
        factor = low + (high - low) * torch.rand(len(wave), 1, device=wave.device, dtype=torch.float64)
    source = torch.arange(T, device=wave.device, dtype=torch.float64) * factor          # (B, T)
    before = source.floor().long().clamp(max=T - 1)
    frac = (source - before).to(wave.dtype).reshape(len(wave), *[1] * (wave.ndim - 2), T)
    inside = (source <= T - 1).reshape(frac.shape)
    a, b = _gather_time(wave, before), _gather_time(wave, (before + 1).clamp(max=T - 1))
    return torch.lerp(a, b, frac) * inside
