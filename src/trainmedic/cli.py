"""The ``trainmedic`` command."""

from __future__ import annotations

import sys

import click

from trainmedic.catalog import CATALOG
from trainmedic.demo import BUGS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trainmedic")
def main() -> None:
    """Find out why a neural network trains badly."""


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the JSON report here (default: <run dir>/report.json).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Reserved: HTML reports are not available yet.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]),
              help="Exit with code 3 when a finding of this severity or worse was reported.")
@click.option("--every", type=click.IntRange(min=1, max=10_000), default=25, show_default=True,
              help="Steps between host reads of the statistics.")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Folder for the run's files (default: trainmedic-runs/<timestamp>-<script>).")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(json_path, html_path, fail_on, every, run_dir, script, script_args) -> None:
    """Run SCRIPT (with its own arguments) as python would, watched by trainmedic."""
    if html_path is not None:
        raise click.UsageError("--html is reserved: HTML reports are not available yet")
    from trainmedic.runner import run_script
    sys.exit(run_script(script, list(script_args), json_path=json_path, fail_on=fail_on,
                        every=every, run_dir=run_dir))


@main.command()
@click.option("--bug", type=click.Choice(sorted(BUGS)),
              help="Plant this bug (default: a clean run).")
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False), help="Folder for the report.")
def demo(bug, epochs, run_dir) -> None:
    """Train a small CNN on scikit-learn's digits, optionally with a planted bug."""
    from trainmedic.demo import run_demo
    run_demo(bug, epochs=epochs, run_dir=run_dir)


@main.command()
def ids() -> None:
    """List every finding id with its severity and title."""
    for t in CATALOG.values():
        click.echo(f"{t.id:<28} {t.severity:<8} {t.title}")


if __name__ == "__main__":
    main()
