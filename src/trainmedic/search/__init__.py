"""Hyperparameter search with Optuna, pruned by diagnosis: ``trainmedic tune script.py`` over an
unmodified script (``tune_script``), or ``trainmedic.tune(train_fn, space)`` over a
function. Needs the ``tune`` extra (``pip install 'trainmedic[tune]'``)."""

try:
    import optuna  # noqa: F401
except ImportError as exc:
    raise ImportError(f"trainmedic's search needs Optuna: pip install 'trainmedic[tune]' ({exc})") from exc

from trainmedic.search.function import tune
from trainmedic.search.study import TuneResult, make_pruner, tune_script
from trainmedic.search.summary import format_summary, render_html, summarize, write_reports

__all__ = ["tune", "tune_script", "TuneResult", "make_pruner", "summarize", "format_summary",
           "render_html", "write_reports"]
