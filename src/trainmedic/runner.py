"""Zero-code runner: ``trainmedic run script.py args...`` runs an unmodified training script the
way ``python script.py args...`` would (``sys.argv``, ``__main__``, ``sys.path[0]``, its exit
code), with a discovering Monitor installed for its whole life. A Keras ``Model.fit`` gets the Keras
callback, reporting into that monitor (Keras optimizers are not torch optimizers).

Findings are printed to stderr as they appear, but only when neither stdout nor stderr is in the
middle of a line, so they never split the script's own output.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
import types
from typing import IO, Any, Iterable, NamedTuple

from trainmedic.findings import Finding, Severity
from trainmedic.integrations import attach_keras
from trainmedic.monitor import Monitor, StopTraining
from trainmedic.report.terminal import format_finding

FAIL_ON_EXIT_CODE = 3
INTERRUPTED_EXIT_CODE = 130       # what a shell reports for a SIGINT death; the CLI dies of SIGINT


class RunOutcome(NamedTuple):
    """How a script run under the runner ended: its exit code and the report's status
    ("completed", "crashed", "interrupted", or "stopped" by a ``stop_on`` finding)."""
    code: int
    status: str


class _LineTracked:
    """A pass-through text stream that remembers whether its last write ended a line."""

    def __init__(self, stream: IO[str], printer: "_FindingPrinter") -> None:
        self._stream = stream
        self._printer = printer
        self.at_line_start = True

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if text:
            self.at_line_start = text.endswith("\n")
            if self.at_line_start:
                self._printer.flush()
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _FindingPrinter:
    """Prints findings to the real stderr at line boundaries of both output streams."""

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.err = err
        self.pending: list[str] = []
        self.streams = (_LineTracked(out, self), _LineTracked(err, self))

    def __call__(self, finding: Finding) -> None:
        self.pending.append(format_finding(finding))
        self.flush()

    def flush(self, force: bool = False) -> None:
        if not self.pending or not (force or all(s.at_line_start for s in self.streams)):
            return
        out = self.streams[0]
        out.flush()
        prefix = "" if all(s.at_line_start for s in self.streams) else "\n"
        text, self.pending = prefix + "\n".join(self.pending) + "\n", []
        self.err.write(text)
        self.err.flush()


def run_script(script: str, args: list[str] | tuple[str, ...] = (), *, json_path: str | None = None,
               fail_on: str | None = None, every: int = 25, run_dir: str | None = None,
               goal: str | None = None, html_path: str | None = None, tensorboard: str | None = None,
               live: bool = True, count_resolved: bool = False, repair: "bool | dict" = False,
               stop_on: Iterable[str] = (), source: str | None = None) -> int:
    """Run ``script`` under a Monitor; returns the exit code ``python script`` would have had
    (or FAIL_ON_EXIT_CODE when ``fail_on`` is set and an active finding reaches that severity;
    with ``count_resolved``, findings resolved before the end count too). A script
    ended by Ctrl-C (KeyboardInterrupt) gives INTERRUPTED_EXIT_CODE; only the ``trainmedic run``
    command goes on to die of SIGINT as python would, never an in-process caller."""
    return run_script_outcome(script, args, json_path=json_path, fail_on=fail_on, every=every,
                              run_dir=run_dir, goal=goal, html_path=html_path,
                              tensorboard=tensorboard, live=live, count_resolved=count_resolved,
                              repair=repair, stop_on=stop_on, source=source).code


def run_script_outcome(script: str, args: list[str] | tuple[str, ...] = (), *,
                       json_path: str | None = None, fail_on: str | None = None, every: int = 25,
                       run_dir: str | None = None, goal: str | None = None,
                       html_path: str | None = None, tensorboard: str | None = None,
                       live: bool = True, count_resolved: bool = False,
                       repair: "bool | dict" = False, stop_on: Iterable[str] = (),
                       source: str | None = None) -> RunOutcome:
    """:func:`run_script`, also telling how the script ended (see :class:`RunOutcome`).
    ``stop_on``: finding ids or severities that end the script early (status "stopped", exit
    code 0). ``source``: run this code instead of the file's, as if it were the file (its
    ``__file__``, ``sys.argv[0]``, tracebacks): how ``trainmedic fix`` runs a patched copy."""
    if not os.path.isfile(script):
        raise FileNotFoundError(f"script={script!r} does not exist or is not a file")
    if fail_on is not None:
        Severity.parse(fail_on, "fail_on")
    real_out, real_err = sys.stdout, sys.stderr
    name = os.path.splitext(os.path.basename(script))[0]
    monitor = Monitor(every=every, run_dir=run_dir, name=name, discover=True, goal=goal,
                      tensorboard=tensorboard, repair=repair, stop_on=stop_on)
    status = _live_status(real_err, monitor) if live and monitor.rank == 0 else None
    printer = _FindingPrinter(sys.stdout, sys.stderr)     # rich's proxies while the status is live
    if monitor.rank == 0:                                 # the other ranks of a job stay quiet
        monitor.on_finding = printer
    detach = attach_keras(monitor)
    saved_argv, saved_path0 = sys.argv, sys.path[0] if sys.path else None
    sys.argv = [script, *args]
    script_dir = os.path.dirname(os.path.abspath(script))
    if sys.path:
        sys.path[0] = script_dir
    else:
        sys.path.append(script_dir)
    sys.stdout, sys.stderr = printer.streams
    outcome, code = "completed", 0
    try:
        if source is None:
            runpy.run_path(script, run_name="__main__")
        else:
            _run_source(source, script)
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except StopTraining as exc:
        outcome = "stopped"
        monitor.extra_run_info["stopped_by"] = exc.reason
        print(f"trainmedic: stopped at step {monitor.step}: {exc.reason}", file=real_err, flush=True)
    except KeyboardInterrupt:
        outcome, code = "interrupted", INTERRUPTED_EXIT_CODE
        _print_user_traceback(script)
    except BaseException:  # noqa: BLE001 - the script's own crash, reported like python would
        outcome, code = "crashed", 1
        _print_user_traceback(script)
    finally:
        detach()
        printer.flush(force=True)
        if status is not None:
            monitor.tick_sinks.remove(status)
            status.close()
        sys.stdout, sys.stderr = real_out, real_err
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
        monitor.close(outcome)
        monitor.extra_run_info.update({"script": script, "args": list(args), "exit_code": code})
        report = _write_report(monitor, json_path, html_path, real_out, real_err)
    if (fail_on is not None and report is not None and code == 0
            and report.at_least(fail_on, include_resolved=count_resolved)):
        code = FAIL_ON_EXIT_CODE
    return RunOutcome(code, outcome)


def _run_source(source: str, script: str) -> None:
    """Run ``source`` as ``__main__`` the way runpy runs ``script``: its own module object in
    ``sys.modules["__main__"]``, ``__file__`` the script's path, code objects named after it."""
    code = compile(source, script, "exec")
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=script, __builtins__=__builtins__, __loader__=None,
                           __spec__=None, __package__=None, __cached__=None)
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _write_report(monitor: Monitor, json_path, html_path, out, err):
    """Write and summarise the report (rank 0 of a distributed job only); a failure here (disk
    full, bad path) is printed, never raised, so the script's own exit code stands."""
    if monitor.rank != 0:                       # its findings count for --fail-on; no files
        return monitor.report(json_path, html=html_path)
    try:
        report = monitor.report(json_path, html=html_path)
    except Exception as exc:  # noqa: BLE001
        print(f"trainmedic: could not write the report ({type(exc).__name__}: {exc})", file=err, flush=True)
        return None
    out.flush()
    print(report, file=err)
    written = [monitor.report_path] + ([os.fspath(html_path)] if html_path else [])
    own = os.path.join(monitor.run_dir, "report.json") if monitor.run_dir else None
    print(f"trainmedic: report written to {' and '.join(written)}"
          + (f" (run directory: {monitor.run_dir})" if own and monitor.report_path != own else ""),
          file=err, flush=True)
    return report


def _live_status(stream, monitor: Monitor):
    """The rich status line on a terminal; None for pipes, files and CI logs."""
    if not (hasattr(stream, "isatty") and stream.isatty()) or os.environ.get("CI"):
        return None
    try:
        from trainmedic.report.live import LiveStatus
    except ImportError:
        return None
    status = LiveStatus(stream, lambda: monitor.findings).start()
    monitor.tick_sinks.append(status)
    return status


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_user_traceback(script: str) -> None:
    """Print the traceback as python would, without the runner's own frames."""
    etype, exc, tb = sys.exc_info()
    target = os.path.abspath(script)
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != target:
        tb = tb.tb_next
    traceback.print_exception(etype, exc, tb if tb is not None else exc.__traceback__)

