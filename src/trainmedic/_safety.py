"""Fail-safe execution: an internal error disables the failing piece of trainmedic with one
warning, and never reaches the user's training code."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable


class Guard:
    def __init__(self) -> None:
        self.disabled: dict[str, str] = {}

    def call(self, piece: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn``; on an exception disable ``piece`` (warning once) and return None."""
        if piece in self.disabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - anything raised inside trainmedic is ours
            self.disable(piece, exc)
            return None

    def wrap(self, piece: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self.call(piece, fn, *args, **kwargs)
        return guarded

    def disable(self, piece: str, exc: BaseException) -> None:
        if piece in self.disabled:
            return
        self.disabled[piece] = f"{type(exc).__name__}: {exc}"
        warn(f"trainmedic: internal error in {piece} ({type(exc).__name__}: {exc}); "
             f"{piece} is disabled for the rest of this run, training is unaffected", stacklevel=4)


def warn(message: str, stacklevel: int = 3) -> None:
    """A RuntimeWarning that never reaches user code as an exception (under ``-W error`` it is
    printed to stderr instead)."""
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)
    except Exception:  # noqa: BLE001
        try:
            print(message, file=sys.stderr)
        except Exception:  # noqa: BLE001
            pass
