"""Text augmentations on token ids ``(B, L)``, padding-aware: positions holding ``pad_id`` are
never changed, and rates count the tokens only. ``generator``: see :mod:`trainmedic.augment`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainmedic.augment._common import check_int, check_number, check_tensor, seeded

IDS = "of token ids (B, L)"


def _tokens(ids: torch.Tensor, pad_id: int, p: float) -> torch.Tensor:
    """Checks the common arguments; the mask of the non-padding positions."""
    check_tensor("ids", ids, (2,), IDS, floating=False)
    check_int("pad_id", pad_id)
    check_number("p", p, 0, 1)
    return ids != pad_id


def drop_tokens(ids: torch.Tensor, *, pad_id: int, p: float = 0.1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Token dropout (word dropout): each token is deleted with probability ``p``; the tokens
    after it move up over the gap, and the positions freed at the end of the row's tokens become
    padding. A row keeps at least its first token. Recompute an attention mask (``ids != pad_id``)."""
    tokens = _tokens(ids, pad_id, p)
    with seeded(generator, ids.device):
        keep = tokens & (torch.rand(ids.shape, device=ids.device) >= p)
    first = tokens & (tokens.cumsum(1) == 1)
    keep |= first & ~keep.any(1, keepdim=True)
    # the k-th kept token goes to the row's k-th token position; the other token positions get pad_id
    kept_first = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    slots = torch.sort((~tokens).to(torch.uint8), dim=1, stable=True).indices
    position = torch.arange(ids.shape[1], device=ids.device)
    moved = torch.where(position < keep.sum(1, keepdim=True), ids.gather(1, kept_first), pad_id)
    return torch.full_like(ids, pad_id).scatter(1, slots, moved)


def replace_tokens(ids: torch.Tensor, *, pad_id: int, vocab_size: int, p: float = 0.1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random token replacement: each token is replaced with probability ``p`` by an id drawn
    uniformly from ``[0, vocab_size)``, never ``pad_id``."""
    tokens = _tokens(ids, pad_id, p)
    vocab_size = check_int("vocab_size", vocab_size, 2)
    skip_pad = 0 <= pad_id < vocab_size
    with seeded(generator, ids.device):
        hit = tokens & (torch.rand(ids.shape, device=ids.device) < p)
        new = torch.randint(vocab_size - skip_pad, ids.shape, device=ids.device, dtype=ids.dtype)
    if skip_pad:
        new += new >= pad_id
    return torch.where(hit, new, ids)


def mask_spans(ids: torch.Tensor, *, pad_id: int, mask_id: int, p: float = 0.15, span: int = 3,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Span masking (SpanBERT-style, fixed length): runs of ``span`` tokens set to ``mask_id``,
    covering a fraction ``p`` of the tokens on average; spans stop at the padding and may
    overlap."""
    tokens = _tokens(ids, pad_id, p)
    check_int("mask_id", mask_id)
    if mask_id == pad_id:
        raise ValueError(f"mask_id={mask_id!r} is not valid; expected an id other than pad_id={pad_id!r}")
    span = check_int("span", span, 1)
    start_rate = 1 - (1 - p) ** (1 / span)       # a token is then outside every span with probability 1 - p
    with seeded(generator, ids.device):
        starts = tokens & (torch.rand(ids.shape, device=ids.device) < start_rate)
    count = F.pad(starts.long().cumsum(1), (span, 0))          # a span covers its start and span-1 after
    covered = count[:, span:] > count[:, :-span]
    return torch.where(covered & tokens, mask_id, ids)
