"""The checkup battery: named checks run before (or at the start of) training."""

# Import order is the battery's order: data, wiring, initialisation, training, custom ops.
from trainmedic.checks import data, wiring, init, training, gradcheck  # noqa: F401,I001
from trainmedic.checks.base import REGISTRY, CheckContext, CheckResult, Skip, preserved

__all__ = ["REGISTRY", "CheckContext", "CheckResult", "Skip", "preserved"]
