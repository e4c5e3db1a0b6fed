"""Reports people look at: the run directory, the HTML page (checked in headless Chromium when
it is installed), TensorBoard event files, and plain terminal output off a TTY."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import trainmedic
from trainmedic.rundir import read_run
from trainmedic.runner import run_script

ZOO = os.path.join(os.path.dirname(__file__), "zoo")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _planted_run(tmp_path, script="bug_learning_rate_too_high.py"):
    run_dir = tmp_path / "run"
    assert run_script(os.path.join(ZOO, script), run_dir=str(run_dir), html_path=str(tmp_path / "r.html"),
                      goal="val_acc>=0.99") == 0
    return run_dir, (tmp_path / "r.html").read_text()


def test_run_directory_holds_metrics_and_report(tmp_path):
    run_dir, _ = _planted_run(tmp_path)
    report, ticks = read_run(str(run_dir))
    assert report.by_id("learning_rate_too_high") and ticks
    assert ticks[0]["first_step"] == 0 and len(ticks[0]["losses"]) == 25
    assert {"grad", "update"} <= set(ticks[0]["layers"]["features.0"])
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 999, "losses": [1.0, ')            # a line cut short by a crash
    assert len(read_run(str(run_dir))[1]) == len(ticks)


def test_html_is_self_contained_and_lists_findings(tmp_path):
    _, html = _planted_run(tmp_path)
    assert "The learning rate is too high" in html and "What to try, in order" in html
    assert not re.search(r"https?://", html)
    assert not re.search(r'(?:src|href)="(?!data:)', html)
    assert html.count("data:image/png;base64,") >= 5


def test_user_strings_are_escaped(tmp_path):
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(4, 8))
    model.add_module("<script>alert(1)</script>", nn.ReLU())
    model.add_module("out", nn.Linear(8, 2))
    nn.init.constant_(model.fc.bias, -5.0)                     # dead units: a finding names the site
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path / "run", name="<img src=x onerror=alert(2)>",
                               on_finding=lambda f: None)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(64, 4)), torch.zeros(64, dtype=torch.long)).backward()
        opt.step()
    report = monitor.report(html=tmp_path / "r.html")
    assert "<script>alert(1)</script>" in report.by_id("dead_relu").where
    html = (tmp_path / "r.html").read_text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html


def test_html_of_a_long_run_stays_small(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
    monitor = trainmedic.watch(model, opt, run_dir=tmp_path / "run", on_finding=lambda f: None)
    for step in range(10_000):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step % 1000 == 999:
            model.eval()
            with torch.no_grad():
                nn.functional.cross_entropy(model(x), y)
            model.train()
    monitor.report(html=tmp_path / "r.html")
    assert os.path.getsize(tmp_path / "r.html") < 5 * 1024 * 1024


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_in_headless_chromium(tmp_path):
    _, html = _planted_run(tmp_path)
    page = (tmp_path / "r.html").as_uri()
    common = [CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--enable-logging=stderr", "--v=0", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    for title in ("The learning rate is too high", "The loss is diverging"):
        assert title in dom.stdout
    shot = tmp_path / "shot.png"
    res = subprocess.run([*common, "--window-size=1100,2400", f"--screenshot={shot}", page],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logdir = tmp_path / "tb"
    assert run_script(os.path.join(ZOO, "bug_overfitting.py"), run_dir=str(tmp_path / "run"),
                      tensorboard=str(logdir)) == 0
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "epoch/val_loss", "epoch/val_acc"} <= set(tags["scalars"])
    assert any(t.startswith("grad_norm/") for t in tags["scalars"])
    assert any(t.startswith("activations/") for t in tags["histograms"])
    assert len(acc.Scalars("epoch/val_loss")) == 60
    hist = acc.Histograms(tags["histograms"][0])[0].histogram_value
    assert hist.num > 0 and len(hist.bucket) == 40


def test_report_command_rerenders_a_run_dir(tmp_path):
    run_dir, _ = _planted_run(tmp_path)
    res = subprocess.run([sys.executable, "-m", "trainmedic.cli", "report", str(run_dir), "--tensorboard",
                          str(tmp_path / "tb")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "The learning rate is too high" in (run_dir / "report.html").read_text()
    assert os.listdir(tmp_path / "tb")
    bad = subprocess.run([sys.executable, "-m", "trainmedic.cli", "report", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "holds no report.json" in bad.stderr


def test_plain_output_without_a_tty_has_no_control_sequences(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(60):
            nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.zeros(8, dtype=torch.long)).backward()
            opt.step()
            if step % 20 == 0:
                print("step", step)
    """))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    res = subprocess.run([sys.executable, "-m", "trainmedic.cli", "run", str(script)], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0 and "grads_not_cleared" in res.stderr
    assert "\x1b" not in res.stdout and "\x1b" not in res.stderr
    checkup = subprocess.run([sys.executable, "-m", "trainmedic.cli", "ids"], capture_output=True, text=True, env=env)
    assert "\x1b" not in checkup.stdout


def test_live_status_on_a_terminal(tmp_path):
    pty = pytest.importorskip("pty")
    script = os.path.join(ZOO, "bug_grads_not_cleared.py")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    pid, fd = pty.fork()
    if pid == 0:                                    # the child runs on the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "trainmedic.cli", "run", "--run-dir",
                                   str(tmp_path / "run"), script], env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0
    assert "trainmedic ▸ step" in text and "findings 1 (1 errors)" in text      # the live line
    assert "grads_not_cleared" in text and "trainmedic summary" in text
