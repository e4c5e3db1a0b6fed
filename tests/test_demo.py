"""The demo's planted bugs are each diagnosed; the clean demo is silent."""

import io

import pytest

from trainmedic.demo import BUGS, run_demo

EXPECTED = {"lr-too-high": "learning_rate_too_high", "lr-too-low": "learning_rate_too_low",
            "zero-init": "symmetric_weights", "missing-params": "params_not_in_optimizer",
            "softmax-before-ce": "loss_input_mismatch", "no-zero-grad": "grads_not_cleared"}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_demo_bug_is_diagnosed(bug, tmp_path):
    report = run_demo(bug, epochs=4, run_dir=str(tmp_path), out=io.StringIO())
    assert EXPECTED[bug] in report.ids()


def test_clean_demo_is_silent(tmp_path):
    out = io.StringIO()
    report = run_demo(None, run_dir=str(tmp_path), out=out)
    assert report.at_least("warning") == []
    assert "val accuracy 0.9" in out.getvalue()


def test_unknown_bug_is_a_clear_error():
    with pytest.raises(ValueError, match="bug='typo'.*expected one of"):
        run_demo("typo")
