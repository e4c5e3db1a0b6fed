"""The live terminal view of `trainmedic run` on a TTY: a status line (step, loss, LR, findings
so far) kept at the bottom by rich while the script's own output scrolls above it. Pipes and
CI logs never get it: they get plain lines without control sequences."""

from __future__ import annotations

import math
from typing import IO, Any, Callable


class LiveStatus:
    """A tick sink; ``start`` redirects stdout/stderr through rich so output lands above the
    status line (lines are decoded as plain text, never as markup)."""

    def __init__(self, stream: IO[str], findings: Callable[[], dict]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self._findings = findings
        self.live = Live(Text("trainmedic: waiting for the first steps"), console=Console(file=stream),
                         redirect_stdout=True, redirect_stderr=True, transient=True,
                         refresh_per_second=4)

    def start(self) -> "LiveStatus":
        self.live.start()
        return self

    def on_tick(self, line: dict[str, Any], epochs: list[dict[str, Any]]) -> None:
        losses = [v for v in line.get("losses") or [] if v is not None and math.isfinite(v)]
        found = self._findings()
        errors = sum(f.severity.value == "error" for f in found.values())
        parts = [f"trainmedic ▸ step {line['step']}"]
        if losses:
            parts.append(f"loss {sorted(losses)[len(losses) // 2]:.4g}")
        if line.get("lr") is not None:
            parts.append(f"lr {line['lr']:.3g}")
        if epochs and epochs[-1].get("val_loss") is not None:
            parts.append(f"val loss {epochs[-1]['val_loss']:.4g} (epoch {epochs[-1]['epoch']})")
        parts.append(f"findings {len(found)}" + (f" ({errors} errors)" if errors else ""))
        style = "bold red" if errors else ("yellow" if found else "green")
        self.live.update(self._text(" · ".join(parts), style=style))

    def close(self) -> None:
        self.live.stop()
