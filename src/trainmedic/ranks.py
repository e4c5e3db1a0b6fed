"""Which process of a distributed job this is. Every rank measures its own run; rank 0 alone
prints findings and writes the run directory, so a job gets one report and each finding once."""

from __future__ import annotations

import os


def group_exists() -> bool:
    """Whether this process belongs to a torch.distributed process group now."""
    try:
        import torch.distributed as dist
        return bool(dist.is_available() and dist.is_initialized())
    except Exception:  # noqa: BLE001 - a broken backend is no reason to fail: no group
        return False


def process_rank() -> int:
    """The torch.distributed rank once a process group exists, else the launcher's ``RANK``
    (torchrun sets it before the script runs), else 0."""
    if group_exists():
        import torch.distributed as dist
        try:
            return int(dist.get_rank())
        except Exception:  # noqa: BLE001 - a broken backend is no reason to fail: the launcher's
            pass
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
