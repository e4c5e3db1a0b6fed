"""The findings contract: catalog, JSON round trip, atomic writes, clear errors."""

import json
import os
import re

import pytest

from trainmedic import CATALOG, Finding, Report, Severity
from trainmedic.findings import write_atomic

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "FINDINGS.md")


@pytest.mark.skipif(not os.path.exists(SHARED), reason="../shared/FINDINGS.md is not beside the checkout")
def test_catalog_has_every_taxonomy_id():
    ids = set(re.findall(r"^\| `([a-z_]+)` \|", open(SHARED, encoding="utf-8").read(), re.M))
    assert len(ids) > 30
    assert ids <= set(CATALOG)


def test_every_catalog_entry_is_complete():
    for t in CATALOG.values():
        assert t.severity in ("error", "warning", "info") and t.title and t.why and t.fixes


def test_round_trip_and_schema(tmp_path):
    f = Finding.make("dead_relu", "90% dead", where="fc1", step=12,
                     evidence={"fraction": 0.9, "nan": float("nan"), "arr": [1, 2]})
    rep = Report([f, Finding.make("learning_rate_too_high", "big", severity="error")], run={"name": "x"})
    path = rep.write_json(tmp_path / "r.json")
    data = json.loads(open(path).read())
    assert set(data) == {"trainmedic_version", "run", "findings"}
    assert data["findings"][0]["id"] == "learning_rate_too_high"      # worst first
    assert data["findings"][1]["evidence"] == {"fraction": 0.9, "nan": "nan", "arr": [1, 2]}
    back = Report.read_json(path)
    assert back.ids() == ["learning_rate_too_high", "dead_relu"]
    assert back.by_id("dead_relu").fixes == list(CATALOG["dead_relu"].fixes)
    assert [x.id for x in back.at_least("error")] == ["learning_rate_too_high"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_atomic(target, "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


def test_clear_errors():
    with pytest.raises(ValueError, match="finding_id='no_such'.*expected one of"):
        Finding.make("no_such", "x")
    with pytest.raises(ValueError, match="severity='fatal'.*'info', 'warning', 'error'"):
        Severity.parse("fatal")


def test_history_is_bounded():
    from trainmedic.history import History
    h = History(cap=64)
    for i in range(10_000):
        h.append(step=i)
    steps = h.column("step")
    assert len(h) <= 64 and steps[0] == 0 and steps[-1] == 9999
    assert (steps[1:] > steps[:-1]).all()
