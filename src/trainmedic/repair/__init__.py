"""Verified repair while training (first slice): roll back to a healthy snapshot, apply a
remedy, verify it. See :class:`RepairController` and the README's "Repair while training"."""

from trainmedic.repair.controller import RepairController
from trainmedic.repair.remedies import ORDER, REMEDIES, Remedy
from trainmedic.repair.snapshots import SnapshotRing, find_schedulers

__all__ = ["RepairController", "ORDER", "REMEDIES", "Remedy", "SnapshotRing", "find_schedulers"]
