"""`trainmedic run` output flags and exit status: every combination of --json, --html,
--tensorboard and --run-dir writes every file it asks for (whether the script trains, crashes or
trains nothing), the run directory is always complete, and Ctrl-C ends the runner the way it
ends python (a SIGINT death, not exit code 130)."""

import glob
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from trainmedic.catalog import CATALOG
from trainmedic.rundir import read_run, read_ticks
from trainmedic.runner import INTERRUPTED_EXIT_CODE, run_script, run_script_outcome

POSIX = os.name == "posix"

TRAINS = textwrap.dedent("""
    import torch
    from torch import nn
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(40):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long))
        loss.backward()                           # zero_grad forgotten: a finding
        opt.step()
""")
SCRIPTS = {
    "trains": (TRAINS, 0, "completed"),
    "crashes": (TRAINS + "raise ValueError('boom')\n", 1, "crashed"),
    "trains_nothing": ("print('nothing to train')\n", 0, "completed"),
}
FLAGS = ("json", "html", "tensorboard", "run_dir")
COMBINATIONS = list(itertools.product([False, True], repeat=len(FLAGS)))


def _script(tmp_path, body, name="train.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trainmedic.cli", "run", *args],
                          capture_output=True, text=True, cwd=cwd)


def _check_outputs(tmp_path, wanted, kind, run_dir):
    """Every requested file exists and is valid; the run directory holds metrics.jsonl and
    report.json (always: --json is an extra copy)."""
    _, _, status = SCRIPTS[kind]
    own = os.path.join(run_dir, "report.json")
    assert os.path.isfile(os.path.join(run_dir, "metrics.jsonl"))
    assert read_ticks(run_dir), "a run writes at least its final tick line"
    with open(own, encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["run"]["status"] == status
    report, ticks = read_run(run_dir)
    assert ticks == read_ticks(run_dir)
    ids = [f.id for f in report.findings]
    if kind != "trains_nothing":
        assert "grads_not_cleared" in ids
    if wanted["json"]:
        with open(tmp_path / "out" / "r.json", encoding="utf-8") as fh:
            text = fh.read()
        assert json.loads(text)["run"]["status"] == status
        with open(own, encoding="utf-8") as fh:
            assert fh.read() == text                      # the same report, twice
    if wanted["html"]:
        html = (tmp_path / "out" / "r.html").read_text(encoding="utf-8")
        assert "<h2>Findings</h2>" in html
        if kind != "trains_nothing":
            assert CATALOG["grads_not_cleared"].title in html
    if wanted["tensorboard"]:
        assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    leftovers = [p for p in glob.glob(str(tmp_path / "**" / ".tmp-*"), recursive=True)]
    assert leftovers == []


def _find_run_dir(tmp_path, wanted):
    if wanted["run_dir"]:
        return str(tmp_path / "rd")
    found = glob.glob(str(tmp_path / "trainmedic-runs" / "*-train"))
    assert len(found) == 1, found
    return found[0]


# Every combination on a training script; a crash and an empty run with none, --json + --html
# (the reported bug) and all four flags (each HTML render costs about a second).
CASES = [(c, "trains") for c in COMBINATIONS] + [
    (c, kind) for kind in ("crashes", "trains_nothing")
    for c in (COMBINATIONS[0], (True, True, False, False), COMBINATIONS[-1])]


@pytest.mark.parametrize("combo, kind", CASES,
                         ids=[f"{kind}-" + ("+".join(f for f, on in zip(FLAGS, c) if on) or "none")
                              for c, kind in CASES])
def test_every_flag_combination_writes_every_file(tmp_path, monkeypatch, combo, kind):
    wanted = dict(zip(FLAGS, combo))
    body, code, _ = SCRIPTS[kind]
    script = _script(tmp_path, body)
    monkeypatch.chdir(tmp_path)                          # the default run dir is relative
    result = run_script(script, every=5, live=False,
                        json_path=str(tmp_path / "out" / "r.json") if wanted["json"] else None,
                        html_path=str(tmp_path / "out" / "r.html") if wanted["html"] else None,
                        tensorboard=str(tmp_path / "tb") if wanted["tensorboard"] else None,
                        run_dir=str(tmp_path / "rd") if wanted["run_dir"] else None)
    assert result == code
    _check_outputs(tmp_path, wanted, kind, _find_run_dir(tmp_path, wanted))


@pytest.mark.parametrize("args", [["--html", "out/r.html", "--json", "out/r.json"],
                                  ["--json", "out/r.json", "--html", "out/r.html", "--tensorboard", "tb",
                                   "--run-dir", "rd"]])
def test_html_with_json_elsewhere_from_the_command_line(tmp_path, args):
    """The reported bug: --html next to --json wrote no HTML (the run dir had no report.json)."""
    res = _cli(*args, _script(tmp_path, SCRIPTS["crashes"][0]), cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "could not write the report" not in res.stderr
    wanted = {f: f"--{f.replace('_', '-')}" in args for f in FLAGS}
    run_dir = _find_run_dir(tmp_path, wanted)
    _check_outputs(tmp_path, wanted, "crashes", run_dir)
    assert f"report written to out/r.json and out/r.html (run directory: {os.path.relpath(run_dir, tmp_path)})" in res.stderr


def test_monitor_report_html_with_a_json_path_elsewhere(tmp_path):
    """The same from the API: report(path, html=...) needs no report.json in the run dir first."""
    import torch
    from torch import nn

    import trainmedic
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path / "rd", on_finding=lambda f: None, every=5)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
        opt.step()
    monitor.report(tmp_path / "elsewhere" / "r.json", html=tmp_path / "r.html")
    assert monitor.report_path == str(tmp_path / "elsewhere" / "r.json")
    assert "<h2>Findings</h2>" in (tmp_path / "r.html").read_text()
    assert read_run(str(tmp_path / "rd"))[0].run["status"] == "completed"
    assert (tmp_path / "rd" / "report.json").read_text() == (tmp_path / "elsewhere" / "r.json").read_text()


INTERRUPTS = {
    "raises": """
        import torch
        from torch import nn
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
        raise KeyboardInterrupt
    """,
    "real_sigint": """
        import os, signal, torch
        from torch import nn
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(1000):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
            if step == 29:
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in the middle of the loop
        print("never reached")
    """,
}


@pytest.mark.skipif(not POSIX, reason="a SIGINT death is POSIX; elsewhere the runner exits 130")
@pytest.mark.parametrize("how", sorted(INTERRUPTS))
def test_ctrl_c_ends_the_runner_as_it_ends_python(tmp_path, how):
    script = _script(tmp_path, INTERRUPTS[how])
    res = _cli("--json", "out/r.json", "--no-live", script, cwd=tmp_path)
    plain = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == -signal.SIGINT, plain.stderr
    assert res.returncode == plain.returncode, res.stderr
    assert "never reached" not in res.stdout
    assert "KeyboardInterrupt" in res.stderr and "trainmedic summary" in res.stderr
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    assert data["run"]["status"] == "interrupted" and data["run"]["steps"] == 30
    assert data["run"]["exit_code"] == INTERRUPTED_EXIT_CODE


@pytest.mark.skipif(not POSIX, reason="POSIX exit handlers before the SIGINT death")
def test_ctrl_c_still_runs_the_scripts_exit_handlers(tmp_path):
    script = _script(tmp_path, """
        import atexit
        atexit.register(lambda: print("exit handler ran", flush=True))
        raise KeyboardInterrupt
    """)
    res = _cli("--run-dir", "rd", script, cwd=tmp_path)
    plain = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == plain.returncode == -signal.SIGINT
    assert res.stdout == plain.stdout == "exit handler ran\n"


def test_in_process_interrupt_returns_130_and_never_kills_the_caller(tmp_path, monkeypatch):
    """run_script is used in-process (tests, notebooks): Ctrl-C of the script is a return value."""
    script = _script(tmp_path, INTERRUPTS["real_sigint"])
    monkeypatch.chdir(tmp_path)
    assert run_script(script, run_dir="rd", live=False) == INTERRUPTED_EXIT_CODE
    outcome = run_script_outcome(script, run_dir="rd2", live=False)
    assert outcome == (INTERRUPTED_EXIT_CODE, "interrupted")
    assert read_run("rd")[0].run["status"] == "interrupted"
