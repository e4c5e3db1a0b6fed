"""`trainmedic fix`: the demo's bugs are named, the fix is verified by re-running, and the patch
it prints, applied to a copy of the script, makes the finding disappear."""

import json
import shutil
import subprocess
import sys

import pytest

from trainmedic.demo import script_source
from trainmedic.repair.fix import run_fix
from trainmedic.runner import run_script

# bug -> (the finding that must be named, the remedy that must be verified)
DEMO_BUGS = {
    "lr-too-high": ("learning_rate_too_high", "lr_scale_0.01"),
    "lr-too-low": ("learning_rate_too_low", "lr_scale_1000"),
    "zero-init": ("symmetric_weights", "reinit_layers"),
    "missing-params": ("params_not_in_optimizer", "add_missing_params"),
    "softmax-before-ce": ("loss_input_mismatch", "loss_gets_logits"),
    "no-zero-grad": ("grads_not_cleared", "zero_grad_each_step"),
}


@pytest.mark.parametrize("bug", sorted(DEMO_BUGS))
def test_fix_verifies_the_right_remedy_and_its_patch_removes_the_finding(tmp_path, bug, monkeypatch):
    finding, remedy = DEMO_BUGS[bug]
    work = tmp_path / "project"
    work.mkdir()
    script = work / "train.py"
    script.write_text(script_source(bug, epochs=4))
    monkeypatch.chdir(work)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_fix("train.py", out_dir=str(tmp_path / "fix"), echo=lambda m: None)
    assert finding in result.baseline["findings"]
    assert result.winner is not None, [(c.remedy, c.status) for c in result.candidates]
    assert (result.winner.remedy, result.winner.finding) == (remedy, finding)
    assert result.winner.metric > result.baseline["metric"]
    assert result.winner.diff and result.winner.diff.startswith("--- a/train.py\n+++ b/train.py\n")
    assert json.loads((tmp_path / "fix" / "fix.json").read_text())["winner"] == remedy
    assert script.read_text() == script_source(bug, epochs=4)          # never edits the user's file

    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    if shutil.which("patch"):
        subprocess.run(["patch", "-p1", "-s"], input=result.winner.diff, text=True, cwd=copy, check=True)
    else:          # no patch program: the candidate's patched copy is what the diff describes
        shutil.copy(next((tmp_path / "fix").glob(f"*-{remedy}/train.py")), copy / "train.py")
    assert (copy / "train.py").read_text() != script.read_text()
    monkeypatch.chdir(copy)
    out = copy / "report.json"
    assert run_script("train.py", json_path=str(out), run_dir=str(copy / "run"), live=False) == 0
    after = {f["id"] for f in json.loads(out.read_text())["findings"]}
    assert finding not in after, after


def test_fix_on_a_clean_script_finds_nothing_to_fix(tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(script_source(None, epochs=2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = run_fix("train.py", out_dir=str(tmp_path / "fix"), echo=lambda m: None)
    assert result.winner is None and result.candidates == []
    assert result.baseline["metric"] > 0.9


def test_fix_cli_rejects_a_metric_the_run_never_produces(tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text(script_source(None, epochs=1))
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "trainmedic.cli", "fix", "--metric", "val_bleu",
                           "--out-dir", str(tmp_path / "fix"), "train.py"],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "metric='val_bleu'" in proc.stderr and "val_acc" in proc.stderr, proc.stderr
