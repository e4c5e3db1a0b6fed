"""Distributed jobs: on each tick every rank publishes a small summary of its run (loss,
gradient norm, weight norms, non-finite steps, its findings); rank 0 compares them (the
``rank_divergence`` rule) and takes the other ranks' error findings into the job's one report.

The channel is the job's c10d key-value store (torchrun's agent store, or the TCPStore that
``init_process_group`` built) through a client of our own, with STORE_TIMEOUT on every
operation, its connection included (a local FileStore or HashStore is used as it is). Each rank
``set``s one key, overwritten each tick; rank 0 ``check``s which keys exist and ``multi_get``s
those: it never waits for a key. No collective is issued: a collective on the tick (even on a
gloo subgroup of its own) needs every rank to reach it, in the same order, and hangs when a
rank stops earlier, skips a tick or sits in the user's own collectives; a store operation
involves only the rank making it and the store. A store that does not answer fails within
STORE_TIMEOUT and switches this piece off with one warning. At the end rank 0 waits at most
FINAL_WAIT seconds for the final summaries of the ranks it has heard from. Only host-side
numbers already read on the tick are sent: nothing touches the device.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import time
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from trainmedic.detectors.distributed import RankDivergence
from trainmedic.findings import Finding, Severity, assign_causes
from trainmedic.history import RunState

if TYPE_CHECKING:
    from trainmedic.monitor import Monitor

STORE_TIMEOUT = 10.0     # seconds: the longest a store operation may take before it fails
FINAL_WAIT = 3.0         # seconds rank 0 waits at the end for the other ranks' final summaries
HISTORY = 8              # rank 0's own summaries kept, by step, to meet the others' at theirs
RECENT_TICKS = 3         # ticks behind a rank's recent gradient norm
MAX_ERRORS = 16          # error findings a rank publishes

_links: Counter[str] = Counter()     # links made in this process, by monitor name


def measured_here(finding: Finding) -> bool:
    """Whether this rank measured ``finding`` itself: not another rank's finding taken into
    rank 0's report, nor the comparison of ranks that rank 0 alone makes. ``stop_on`` and
    repair act on these alone, so each rank acts on what it saw (rank 0 stopping or rolling
    back for another rank's fault would leave the others waiting in DDP's collectives)."""
    return finding.id != "rank_divergence" and "rank" not in finding.evidence


class RankLink:
    """This rank's key in the job's store, and (rank 0) the other ranks' keys."""

    def __init__(self, store: Any, prefix: str, rank: int, world: int) -> None:
        self.store, self.prefix, self.rank, self.world = store, prefix, rank, world
        self.heard: set[int] = set()                   # ranks whose key exists

    @classmethod
    def connect(cls, name: str, rank: int) -> "RankLink | None":
        """A link, once a process group of two ranks or more exists; else None."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        store = dist.distributed_c10d._get_default_store()
        while isinstance(store, dist.PrefixStore):
            store = store.underlying_store
        if isinstance(store, dist.TCPStore):            # a client of our own: its own timeout
            store = dist.TCPStore(store.host, store.port, is_master=False, wait_for_workers=False,
                                  timeout=datetime.timedelta(seconds=STORE_TIMEOUT))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        prefix = f"trainmedic/{attempt}/{name}/{_links[name]}/"
        _links[name] += 1
        return cls(store, prefix, rank, dist.get_world_size())

    def publish(self, summary: dict[str, Any]) -> None:
        w = summary["weights"]
        self.store.set(self.prefix + str(self.rank), json.dumps(
            {**summary, "weights": None if w is None else base64.b64encode(w.tobytes()).decode()}))

    def read(self) -> dict[int, dict[str, Any]]:
        """The latest summary of every other rank that has published one; never waits."""
        pending = [r for r in range(self.world) if r != self.rank and r not in self.heard]
        if pending:
            keys = [self.prefix + str(r) for r in pending]
            self.heard.update(pending if self.store.check(keys) else
                              [r for r, k in zip(pending, keys) if self.store.check([k])])
        ranks = sorted(self.heard)
        values = self.store.multi_get([self.prefix + str(r) for r in ranks]) if ranks else []
        out = {r: json.loads(v) for r, v in zip(ranks, values)}
        for summary in out.values():
            w = summary["weights"]
            summary["weights"] = None if w is None else np.frombuffer(base64.b64decode(w), np.float32)
        return out

    def read_final(self) -> dict[int, dict[str, Any]]:
        """:meth:`read`, polled until every rank heard from has published its final summary,
        FINAL_WAIT seconds at most."""
        deadline = time.monotonic() + FINAL_WAIT
        while True:
            latest = self.read()
            if all(s["final"] for s in latest.values()) or time.monotonic() > deadline:
                return latest
            time.sleep(0.02)


class RankWatch:
    """The monitor's part in a distributed job (inert in a single process). ``exchange`` runs
    on each tick and once at the end, after the detectors and the data checks."""

    def __init__(self, monitor: "Monitor") -> None:
        self.monitor = monitor
        self.link: RankLink | None = None
        self.rule = RankDivergence()
        self.own: dict[int, dict[str, Any]] = {}       # rank 0: its summaries by step
        self.peers: dict[int, dict[str, Any]] = {}     # rank 0: each other rank's latest
        self.closed = False                            # the job's store is gone

    def exchange(self, final: bool = False) -> None:
        m = self.monitor
        if self.link is None:
            self.link = RankLink.connect(m.output.name, m.rank)
            if self.link is None:
                return
        if self.closed:
            return
        import torch.distributed as dist
        summary = summarize(m, final)
        try:
            if m.rank != 0:
                self.link.publish(summary)
                return
            peers = self.link.read_final() if final else self.link.read()
        except dist.DistNetworkError:     # the store closed with its process group (mp.spawn's
            self.closed = True            # rank 0 hosts it): the summaries read so far stand
            if m.rank != 0:
                return
            peers = {}
        self.own[summary["step"]] = summary
        for step in sorted(self.own)[:-HISTORY]:
            del self.own[step]
        self.peers.update(peers)
        self._take_findings()
        self._judge()
        assign_causes(list(m.findings.values()))

    def _take_findings(self) -> None:
        """The other ranks' error findings that rank 0 does not have, as findings of the job
        attributed to their rank (``evidence["rank"]``; their status kept up to date)."""
        engine = self.monitor.engine
        for r, s in sorted(self.peers.items()):
            for d in s["errors"]:
                known = engine.findings.get(d["id"])
                if known is None:
                    engine.emit(Finding.make(d["id"], f"On rank {r}: {d['message']}", where=d["where"],
                                             step=d["step"], evidence={**d["evidence"], "rank": r}))
                elif known.evidence.get("rank") == r:
                    known.status, known.resolved_step = d["status"], d["resolved_step"]

    def _judge(self) -> None:
        """The rule's verdict as the ``rank_divergence`` finding: new, refreshed or resolved."""
        names = [i.name for i in self.monitor.table.infos]
        self.monitor.engine.judge(self.rule.id, self.rule.evaluate(self.own, self.peers, names),
                                  self.monitor.step)

    def run_info(self) -> dict[str, Any]:
        """The report's ``run.distributed``: the ranks heard from, their last steps, and which
        ranks found each finding (rank 0's own, the others' as they published them)."""
        if self.link is None or self.monitor.rank != 0:
            return {}
        found: dict[str, set[int]] = {}
        for i, f in self.monitor.findings.items():
            if i == self.rule.id:
                found[i] = set(f.evidence.get("ranks", []))
            elif measured_here(f):
                found.setdefault(i, set()).add(0)
        for r, s in self.peers.items():
            for i in s["findings"]:
                found.setdefault(i, set()).add(r)
        steps = {0: max(self.own)} if self.own else {}
        steps.update({r: s["step"] for r, s in sorted(self.peers.items())})
        return {"distributed": {"world_size": self.link.world, "steps": steps,
                                "found_by": {i: sorted(rs) for i, rs in sorted(found.items())}}}


def summarize(monitor: "Monitor", final: bool) -> dict[str, Any]:
    """This rank's summary (published as JSON: a few hundred bytes, plus 4 bytes per parameter
    and its error findings): from the history only."""
    run: RunState = monitor.run
    rows = run.ticks.rows
    sampled = next((r for r in reversed(rows) if r.get("weight_norm") is not None), None)
    grads = [g for g in (r["grad_total"] for r in rows[-RECENT_TICKS:]) if np.isfinite(g) and g > 0]
    _, v = run.loss_curve()
    recent = v[-min(50, max(10, len(v) // 4)):]
    errors = [f.to_dict() for f in monitor.findings.values() if f.severity is Severity.ERROR]
    diverging = monitor.findings.get("loss_diverging")
    return {
        "rank": monitor.rank, "step": run.step, "ticks": len(rows), "final": final,
        "loss": float(np.median(recent)) if len(recent) else None,
        "loss_se": _median_se(recent), "loss_start": _finite(run.initial_loss()),
        "nonfinite_loss": run.first_nonfinite_loss,
        "nonfinite_grad": run.first_nonfinite_grad[0] if run.first_nonfinite_grad else None,
        "grad": float(np.median(grads)) if grads else None,
        "sample_step": sampled["first_step"] if sampled else None,
        "weights": np.asarray(sampled["weight_norm"], np.float32) if sampled else None,
        "shapes": zlib.crc32(repr([i.shape for i in monitor.table.infos]).encode()),
        "sharded": monitor.table.sharded,
        "ddp": any(_ddp(m) for m in monitor.models),
        "adversarial": run.adversarial,
        "findings": sorted(monitor.findings),
        "diverged": diverging.step if diverging is not None else None,   # its own loss's rise
        "errors": [{k: d[k] for k in ("id", "message", "where", "step", "evidence", "status",
                                      "resolved_step")} for d in errors[:MAX_ERRORS]]}


def _median_se(v: np.ndarray) -> float:
    """The standard error of the median of ``v`` (from its MAD)."""
    if len(v) < 2:
        return float("inf")
    return float(1.4826 * np.median(np.abs(v - np.median(v))) * 1.2533 / np.sqrt(len(v)))


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _ddp(model: Any) -> bool:
    from torch.nn.parallel import DistributedDataParallel
    return any(isinstance(m, DistributedDataParallel) for m in model.modules())
