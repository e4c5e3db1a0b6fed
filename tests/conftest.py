import os
import sys

import pytest

ZOO = os.path.join(os.path.dirname(__file__), "zoo")
sys.path.insert(0, ZOO)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder, so default run directories never litter the repo."""
    monkeypatch.chdir(tmp_path)
