"""Verified repair while training: roll back in place to a healthy snapshot, apply a remedy,
keep it only when verified. See :class:`RepairController` and :mod:`trainmedic.repair.order`."""

from trainmedic.repair.controller import RepairController
from trainmedic.repair.order import ORDER, PRIORITY, REMEDIES, make
from trainmedic.repair.remedies import Remedy
from trainmedic.repair.snapshots import SnapshotRing, find_schedulers

__all__ = ["RepairController", "ORDER", "PRIORITY", "REMEDIES", "Remedy", "SnapshotRing",
           "find_schedulers", "make"]
