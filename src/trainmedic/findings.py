"""Finding and Report: the one contract between detectors, checks and every renderer.

The JSON form (``Report.to_dict``) is canonical; see docs/report-format.md.
"""

from __future__ import annotations

import enum
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from trainmedic.catalog import CAUSES, GUIDE_ORDER, finding_type

from trainmedic._version import __version__


class Severity(str, enum.Enum):
    """How bad a finding is; ordered info < warning < error."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]

    @classmethod
    def parse(cls, value: "str | Severity", argument: str = "severity") -> "Severity":
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{argument}={value!r} is not a severity; expected one of "
                             f"'info', 'warning', 'error'") from None


@dataclass
class Finding:
    """One diagnosed problem: what (id), how bad, where, when, the numbers, and what to try."""

    id: str
    severity: Severity
    title: str
    message: str
    where: str | None = None
    step: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    fixes: list[str] = field(default_factory=list)
    caused_by: str | None = None        # the id of the finding this one follows from
    status: str = "active"              # active | resolved (its condition cleared)
    resolved_step: int | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def make(cls, finding_id: str, message: str, *, where: str | None = None,
             step: int | None = None, evidence: dict[str, Any] | None = None,
             severity: "str | Severity | None" = None) -> "Finding":
        """Build a finding whose title, default severity and fixes come from the catalog."""
        kind = finding_type(finding_id)
        return cls(id=finding_id,
                   severity=Severity.parse(severity or kind.severity),
                   title=kind.title, message=message, where=where, step=step,
                   evidence=dict(evidence or {}), fixes=list(kind.fixes))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity.value, "title": self.title,
                "message": self.message, "where": self.where, "step": self.step,
                "evidence": _jsonable(self.evidence), "fixes": list(self.fixes),
                "caused_by": self.caused_by, "status": self.status,
                "resolved_step": self.resolved_step}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        return cls(id=data["id"], severity=Severity.parse(data["severity"]), title=data["title"],
                   message=data["message"], where=data.get("where"), step=data.get("step"),
                   evidence=dict(data.get("evidence") or {}), fixes=list(data.get("fixes") or []),
                   caused_by=data.get("caused_by"), status=data.get("status", "active"),
                   resolved_step=data.get("resolved_step"))


def assign_causes(findings: "list[Finding]") -> None:
    """Set each finding's ``caused_by`` to the first of its candidate causes (catalog.CAUSES)
    present in ``findings``, active ones before resolved ones (a cause found later also
    explains what it produced earlier)."""
    active = {f.id for f in findings if f.active}
    present = {f.id for f in findings}
    for f in findings:
        causes = [c for c in CAUSES.get(f.id, ()) if c != f.id]
        f.caused_by = next((c for c in causes if c in active), None) or \
            next((c for c in causes if c in present), None)
    by_id = {f.id: f for f in findings}
    for f in findings:                 # break cycles: a cause that follows from f is no cause
        seen, c = {f.id}, f.caused_by
        while c is not None and c not in seen:
            seen.add(c)
            c = by_id[c].caused_by if c in by_id else None
        if c is not None:
            f.caused_by = None


def _rank(f: Finding) -> tuple[int, int, int]:
    return (not f.active, GUIDE_ORDER.index(f.id) if f.id in GUIDE_ORDER else len(GUIDE_ORDER),
            f.step or 0)


def ordered(findings: "list[Finding]") -> "list[Finding]":
    """Root causes first (active before resolved, then the guide's order), each followed by
    the findings that follow from it; info findings last."""
    ids = {f.id for f in findings}
    by_cause: dict[str | None, list[Finding]] = {}
    for f in findings:
        by_cause.setdefault(f.caused_by if f.caused_by in ids else None, []).append(f)
    out: list[Finding] = []

    def visit(f: Finding) -> None:
        out.append(f)
        for child in sorted(by_cause.get(f.id, []), key=_rank):
            visit(child)
    for root in sorted(by_cause.get(None, []), key=lambda f: (f.severity is Severity.INFO, *_rank(f))):
        visit(root)
    return out


@dataclass
class Report:
    """Findings of one run plus the run's metadata (script, steps, settings)."""

    findings: list[Finding] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    def by_id(self, finding_id: str) -> Finding | None:
        return next((f for f in self.findings if f.id == finding_id), None)

    def at_least(self, severity: "str | Severity", *, include_resolved: bool = True) -> list[Finding]:
        """The findings whose severity is ``severity`` or worse (only active ones unless
        ``include_resolved``)."""
        floor = Severity.parse(severity).rank
        return [f for f in self.findings if f.severity.rank >= floor and (include_resolved or f.active)]

    def to_dict(self) -> dict[str, Any]:
        return {"trainmedic_version": __version__, "run": _jsonable(self.run),
                "findings": [f.to_dict() for f in ordered(self.findings)]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        return cls(findings=[Finding.from_dict(f) for f in data.get("findings", [])],
                   run=dict(data.get("run") or {}))

    def write_json(self, path: "str | os.PathLike[str]") -> str:
        """Write the report atomically (temp file in the same folder, then rename)."""
        return write_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def read_json(cls, path: "str | os.PathLike[str]") -> "Report":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def __str__(self) -> str:
        from trainmedic.report.terminal import format_report
        return format_report(self)


def write_atomic(path: "str | os.PathLike[str]", text: str) -> str:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)      # mkstemp creates 0600; give the file normal permissions
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into strict JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(f"{value:.6g}")
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)
