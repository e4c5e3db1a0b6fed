"""`trainmedic run`: runs an unmodified script as python would, prints findings at line
boundaries, writes the report even when the script crashes or is interrupted."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from trainmedic.runner import FAIL_ON_EXIT_CODE, run_script

ZOO = os.path.join(os.path.dirname(__file__), "zoo")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainmedic.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def _script(tmp_path, body, name="train.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_script_sees_argv_main_and_its_own_folder(tmp_path):
    (tmp_path / "helper_mod.py").write_text("VALUE = 41\n")
    script = _script(tmp_path, """
        import sys
        import helper_mod
        print("argv", sys.argv[1:], __name__, helper_mod.VALUE + 1)
        sys.exit(7)
    """)
    res = _cli("run", script, "--lr", "0.1", "extra", cwd=tmp_path)
    assert res.stdout == "argv ['--lr', '0.1', 'extra'] __main__ 42\n"
    assert res.returncode == 7
    assert "trainmedic summary" in res.stderr


def test_fail_on_and_json(tmp_path):
    res = _cli("run", "--fail-on", "error", "--json", str(tmp_path / "r.json"),
               os.path.join(ZOO, "bug_grads_not_cleared.py"), cwd=tmp_path)
    assert res.returncode == FAIL_ON_EXIT_CODE
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["run"]["exit_code"] == 0 and data["run"]["script"].endswith("bug_grads_not_cleared.py")
    assert [f["id"] for f in data["findings"]][0] == "grads_not_cleared"
    assert set(data["findings"][0]) == {"id", "severity", "title", "message", "where", "step",
                                        "evidence", "fixes", "caused_by", "status", "resolved_step"}
    clean = _cli("run", "--fail-on", "warning", os.path.join(ZOO, "clean_lstm.py"), cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr


def test_findings_never_split_a_line(tmp_path, capfd):
    script = _script(tmp_path, """
        import sys, torch
        from torch import nn
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(60):
            print("step", step, "...", end="")       # a progress line written in pieces
            loss = nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long))
            loss.backward()                           # zero_grad forgotten
            opt.step()
            print(" done")
    """)
    assert run_script(script, every=5) == 0
    out, err = capfd.readouterr()
    assert "grads_not_cleared" in err
    assert all(line.endswith(" done") for line in out.splitlines())


@pytest.mark.parametrize("exc, status, code", [("ValueError('boom')", "crashed", 1),
                                                ("KeyboardInterrupt()", "interrupted",
                                                 -signal.SIGINT if os.name == "posix" else 130)])
def test_report_written_on_crash_and_ctrl_c(tmp_path, exc, status, code):
    script = _script(tmp_path, f"""
        import torch
        from torch import nn
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
        raise {exc}
    """)
    res = _cli("run", "--json", "out/report.json", script, cwd=tmp_path)
    assert res.returncode == code
    assert "Traceback" in res.stderr and "trainmedic/runner.py" not in res.stderr
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["run"]["status"] == status and data["run"]["steps"] == 30
    assert [p for p in os.listdir(tmp_path / "out") if p.startswith(".tmp")] == []


def test_watch_report_written_at_exit_without_report_call(tmp_path):
    script = _script(tmp_path, """
        import torch, trainmedic
        from torch import nn
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainmedic.watch(model, opt, run_dir="run")
        for step in range(10):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
        raise KeyboardInterrupt
    """)
    res = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0
    data = json.loads((tmp_path / "run" / "report.json").read_text())
    assert data["run"]["status"] == "interrupted" and data["run"]["steps"] == 10


def test_bad_arguments_are_clear(tmp_path):
    res = _cli("run", "--fail-on", "fatal", "x.py", cwd=tmp_path)
    assert res.returncode == 2 and "fatal" in res.stderr
    res = _cli("run", "missing.py", cwd=tmp_path)
    assert res.returncode == 2 and "missing.py" in res.stderr
    with pytest.raises(FileNotFoundError, match="script='nope.py'"):
        run_script("nope.py")
    with pytest.raises(ValueError, match="fail_on='loud'"):
        run_script(os.path.join(ZOO, "clean_lstm.py"), fail_on="loud")


def test_demo_command_finds_the_planted_bug(tmp_path):
    res = _cli("demo", "--bug", "missing-params", "--epochs", "2", "--run-dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "params_not_in_optimizer" in res.stdout
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["findings"][0]["id"] == "params_not_in_optimizer"


def test_ids_command_lists_the_taxonomy():
    res = _cli("ids")
    assert res.returncode == 0 and "grads_not_cleared" in res.stdout and "overfitting" in res.stdout


def test_unwritable_report_keeps_the_scripts_exit_code(tmp_path):
    script = _script(tmp_path, """
        import sys
        sys.exit(4)
    """)
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    res = _cli("run", "--json", "blocker/report.json", script, cwd=tmp_path)
    assert res.returncode == 4 and "could not write the report" in res.stderr
