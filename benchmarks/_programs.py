"""What the benchmark scripts share: reading a program's module-level constants without running
it, and the provenance lines of a result (machine, code)."""

from __future__ import annotations

import ast
import os
import platform
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def constant(path: str, name: str, default=ValueError):
    """A module-level constant of the program (EXPECT, FINDING, ...), read without running it;
    ``default`` when absent (ValueError: raise)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    if default is ValueError:
        raise ValueError(f"{path}: no {name} = ... at module level")
    return default


def machine() -> str:
    """CPU model, cores, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = "?"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {tv}"


def git_head() -> str:
    """The short commit, with a mark when tracked files were changed since."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "") if head else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"
