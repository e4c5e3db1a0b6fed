"""trainmedic: finds out why a neural network trains badly, explains it and proposes the fixes.

    monitor = trainmedic.watch(model, optimizer)
    ... training loop ...
    print(monitor.report())
"""

from trainmedic._version import __version__
from trainmedic.catalog import CATALOG
from trainmedic.findings import Finding, Report, Severity
from trainmedic.checkup import checkup
from trainmedic.early_stopping import EarlyStopping
from trainmedic.monitor import Monitor, StopTraining, watch

__all__ = ["CATALOG", "EarlyStopping", "Finding", "Monitor", "Report", "Severity", "StopTraining", "__version__",
           "checkup", "watch"]
