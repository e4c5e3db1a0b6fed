"""trainmedic: finds out why a neural network trains badly, explains it and proposes the fixes.

    monitor = trainmedic.watch(model, optimizer)
    ... training loop ...
    print(monitor.report())

    study = trainmedic.tune(train_fn, {"lr": "log:1e-4:1"}, n_trials=40)   # the tune extra
"""

from trainmedic._version import __version__
from trainmedic.catalog import CATALOG
from trainmedic.findings import Finding, Report, Severity
from trainmedic.checkup import checkup
from trainmedic.early_stopping import EarlyStopping
from trainmedic.monitor import Monitor, StopTraining, watch

__all__ = ["CATALOG", "EarlyStopping", "Finding", "Monitor", "Report", "Severity", "StopTraining", "__version__",
           "checkup", "tune", "watch"]


def __getattr__(name: str):
    """``trainmedic.tune`` (it needs Optuna, the ``tune`` extra) and the toolbox modules
    (``augment``, ``finetune``, ``initialize``, ``regularize``), imported on first use."""
    if name == "tune":
        from trainmedic.search import tune
        return tune
    if name in ("augment", "finetune", "initialize", "regularize"):
        import importlib
        return importlib.import_module(f"trainmedic.{name}")
    raise AttributeError(f"module 'trainmedic' has no attribute {name!r}")
