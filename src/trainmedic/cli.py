"""The ``trainmedic`` command."""

from __future__ import annotations

import os
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
              help="Also write the JSON report here (<run dir>/report.json is always written).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML report here.")
@click.option("--tensorboard", type=click.Path(file_okay=False),
              help="Write TensorBoard event files (scalars, activation histograms) to this folder.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]),
              help="Exit with code 3 when an active finding of this severity or worse was reported.")
@click.option("--count-resolved", is_flag=True,
              help="--fail-on also counts findings whose condition cleared before the end.")
@click.option("--every", type=click.IntRange(min=1, max=10_000), default=25, show_default=True,
              help="Steps between host reads of the statistics.")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Folder for the run's files (default: trainmedic-runs/<timestamp>-<script>).")
@click.option("--goal", help="A target such as 'val_acc>=0.95': the report shows the gap and why.")
@click.option("--no-live", is_flag=True, help="No live status line, even on a terminal.")
@click.option("--repair", is_flag=True,
              help="On a repairable finding, roll back to the last healthy snapshot, apply a remedy "
                   "and verify it (in place; see README 'Repair while training').")
@click.option("--snapshots", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="With --repair: snapshots kept in host memory (each about one copy of the "
                   "model and optimizer state).")
@click.option("--apply", "apply_", multiple=True, metavar="REMEDY",
              help="Apply this remedy from the first optimizer step on (repeatable; ids as in "
                   "trainmedic.repair.REMEDIES, plus lr_scale_<factor>, weight_decay_<factor>).")
@click.option("--stop-on", multiple=True, metavar="ID|error|warning",
              help="Stop the script between two steps when this finding (or any of this "
                   "severity) is active (repeatable); the report says which.")
@click.option("--source", type=click.Path(exists=True, dir_okay=False), hidden=True,
              help="Run this file's code as if it were SCRIPT (trainmedic fix's patched copies).")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(json_path, html_path, tensorboard, fail_on, count_resolved, every, run_dir, goal, no_live, repair,
        snapshots, apply_, stop_on, source, script, script_args) -> None:
    """Run SCRIPT (with its own arguments) as python would, watched by trainmedic."""
    from trainmedic.goals import Goal
    from trainmedic.runner import run_script_outcome
    if goal is not None:
        try:
            Goal.parse(goal)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--goal") from None
    if repair and apply_:
        raise click.BadParameter("use either --repair or --apply, not both", param_hint="--apply")
    options: "bool | dict" = {"capacity": snapshots} if repair else False
    if apply_:
        from trainmedic.repair import make
        for remedy in apply_:
            try:
                make(remedy)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--apply") from None
        options = {"apply": list(apply_)}
    from trainmedic.engine import stop_set
    try:
        stop_set(stop_on)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--stop-on") from None
    code = None
    if source is not None:
        with open(source, encoding="utf-8") as fh:
            code = fh.read()
    outcome = run_script_outcome(script, list(script_args), json_path=json_path, fail_on=fail_on,
                                 every=every, run_dir=run_dir, goal=goal, html_path=html_path,
                                 tensorboard=tensorboard, live=not no_live,
                                 count_resolved=count_resolved, repair=options,
                                 stop_on=stop_on, source=code)
    if outcome.status == "interrupted":
        _die_of_sigint()
    sys.exit(outcome.code)


def _die_of_sigint() -> None:
    """End the way python ends after an unhandled KeyboardInterrupt: run the exit handlers,
    flush, then kill this process with SIGINT under the default handler, so that a parent (a
    shell, a job runner) sees a SIGINT death and not exit code 130. Returns on platforms without
    POSIX signals; the caller then exits with 130."""
    import atexit
    import signal
    if os.name != "posix":
        return
    try:
        atexit._run_exitfuncs()          # python runs them before it re-raises the SIGINT
    except Exception:  # noqa: BLE001 - an exit handler's error must not stop the re-raise
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--metric", help="Validation metric to compare (e.g. val_acc, val_loss, f1_macro); "
                               "default: val_acc if the run has it, else val_loss.")
@click.option("--write-patch", type=click.Path(dir_okay=False),
              help="Write the verified fix as a unified diff here (your script is never edited).")
@click.option("--all", "all_candidates", is_flag=True, help="Try every candidate, not only up to the first verified.")
@click.option("--max-candidates", type=click.IntRange(min=1, max=20), default=6, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Folder for the runs (default: trainmedic-runs/<timestamp>-fix-<script>).")
@click.option("--timeout", type=click.FloatRange(min=1), help="Seconds allowed per run.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def fix(metric, write_patch, all_candidates, max_candidates, out_dir, timeout, script, script_args) -> None:
    """Run SCRIPT, diagnose it, re-run it with each candidate remedy from the start, and show
    the verified fix (as a patch when the setting is a literal in the script).

    Exit code: 0 with a verified fix, 4 without one (nothing repairable, or no candidate
    verified)."""
    from trainmedic.repair.fix import format_table, run_fix
    try:
        result = run_fix(script, list(script_args), metric=metric, out_dir=out_dir,
                         all_candidates=all_candidates, max_candidates=max_candidates,
                         timeout=timeout, fork=True, echo=lambda m: click.echo(m, err=True))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metric") from None
    click.echo(format_table(result))
    winner = result.winner
    if winner is not None and winner.diff:
        click.echo("")
        click.echo(winner.diff, nl=False)
        if write_patch:
            with open(write_patch, "w", encoding="utf-8") as fh:
                fh.write(winner.diff)
            click.echo(f"\npatch written to {write_patch} (apply with: patch -p1 < {write_patch})")
    click.echo(f"runs and fix.json in {result.out_dir}")
    sys.exit(0 if winner is not None else 4)


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--param", "params", multiple=True, required=True, metavar="NAME=KIND:SPEC",
              help="A parameter to tune (repeatable): NAME=log:LOW:HIGH, float:LOW:HIGH, "
                   "int:LOW:HIGH, intlog:LOW:HIGH or choice:A,B,C. It reaches the script through "
                   "its argparse flag NAME, else the optimizer (lr, weight_decay, momentum, "
                   "betas...), else the DataLoader (batch_size).")
@click.option("--trials", type=int, default=40, show_default=True,
              help="Finished (complete or pruned) trials the study should hold.")
@click.option("--metric", default="val_loss", show_default=True,
              help="The validation metric to optimise (as the report names it: val_acc, val_loss...).")
@click.option("--direction", help="maximize or minimize (default: minimize losses and errors, "
                                  "maximize anything else).")
@click.option("--sampler", default="tpe", show_default=True, help="grid, random, tpe or gp.")
@click.option("--grid-points", type=int, default=5, show_default=True,
              help="Values per numeric range on the grid sampler.")
@click.option("--seed", type=int, help="The sampler's seed (reproducible studies).")
@click.option("--pruner", default="median", show_default=True,
              help="Optuna's pruner on the metric per epoch: median, hyperband or none.")
@click.option("--diagnosis/--no-diagnosis", default=True, show_default=True,
              help="Stop a trial as soon as an error finding of the training dynamics appears.")
@click.option("--storage", help="An Optuna storage URL shared by workers (postgresql://..., "
                                "sqlite:///..., journal:PATH); default: a SQLite file in the output folder.")
@click.option("--study", "study_name", help="The study's name (default: the script's); an existing "
                                            "study is resumed.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes on this machine working on the study.")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Folder for the trials' runs (default: trainmedic-runs/<timestamp>-tune-<script>).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write the HTML report here (<out dir>/tune.html is always written).")
@click.option("--every", type=click.IntRange(min=1, max=10_000), default=25, show_default=True,
              help="Steps between host reads of the statistics.")
@click.option("--grace-period", type=int, default=30, show_default=True,
              help="With a database --storage: seconds after which the trial of a worker that went "
                   "silent (killed) ends FAIL and is run again once.")
@click.option("--worker", is_flag=True, hidden=True, help="Work on the study, report nothing.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def tune(params, trials, metric, direction, sampler, grid_points, seed, pruner, diagnosis, storage,
         study_name, workers, out_dir, html_path, every, grace_period, worker, script, script_args) -> None:
    """Search SCRIPT's hyperparameters with Optuna, stopping bad trials early by diagnosis."""
    try:
        from trainmedic.search import format_summary, summarize, tune_script, write_reports
    except ImportError as exc:
        raise click.ClickException(str(exc))
    echo = (lambda m: None) if worker else (lambda m: click.echo(m, err=True))
    try:
        result = tune_script(script, list(script_args), params, trials=trials, metric=metric,
                             direction=direction, sampler=sampler, seed=seed, grid_points=grid_points,
                             storage=storage, study_name=study_name, pruner=pruner,
                             diagnosis=diagnosis, workers=workers, out_dir=out_dir, every=every,
                             grace_period=grace_period, echo=echo)
    except (ValueError, ImportError) as exc:
        raise click.UsageError(str(exc)) from None
    if worker:
        return
    summary = summarize(result.study)
    click.echo(format_summary(summary))
    written = write_reports(result, summary, html_path)
    click.echo(f"study, runs and reports in {result.out_dir} ({', '.join(written)})")


@main.command()
@click.option("--bug", type=click.Choice(sorted(BUGS)),
              help="Plant this bug (default: a clean run).")
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False), help="Folder for the report.")
@click.option("--write-script", type=click.Path(dir_okay=False),
              help="Write the demo as a standalone script here instead of running it "
                   "(e.g. for `trainmedic fix`).")
def demo(bug, epochs, run_dir, write_script) -> None:
    """Train a small CNN on scikit-learn's digits, optionally with a planted bug."""
    from trainmedic.demo import run_demo, script_source
    if write_script:
        with open(write_script, "w", encoding="utf-8") as fh:
            fh.write(script_source(bug, epochs=epochs))
        click.echo(f"demo script written to {write_script}")
        return
    run_demo(bug, epochs=epochs, run_dir=run_dir)


@main.command(name="checkup")
@click.argument("target")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--check", "checks", multiple=True, help="Run only this check (repeatable).")
@click.option("--skip", multiple=True, help="Skip this check (repeatable).")
@click.option("--fail-on", type=click.Choice(["error", "warning"]),
              help="Exit with code 3 when a finding of this severity or worse was reported.")
def checkup_cmd(target, json_path, checks, skip, fail_on) -> None:
    """Run the checkup battery on TARGET, a factory 'module:function' or 'path/file.py:function'.

    The factory takes no arguments and returns a dict with the keys model, loss_fn and
    train_loader, and optionally optimizer, val_loader and batch_fn (batch -> (inputs, target))."""
    from trainmedic.checkup import checkup, load_factory
    from trainmedic.report.terminal import format_checks
    try:
        parts = load_factory(target)
    except (ValueError, ImportError, FileNotFoundError, AttributeError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    if sys.stderr.isatty() and not os.environ.get("CI"):
        from rich.progress import Progress
        from trainmedic.checks import REGISTRY
        total = len([n for n in (checks or REGISTRY) if n not in skip])
        with Progress(transient=True) as progress:
            task = progress.add_task("checkup", total=total)
            report = checkup(**parts, checks=list(checks) or None, skip=skip,
                             on_result=lambda r: progress.update(task, advance=1, description=r.name))
    else:
        report = checkup(**parts, checks=list(checks) or None, skip=skip,
                         on_result=lambda r: click.echo(f"  {r.name}: {r.status}", err=True))
    report.run["target"] = target
    click.echo(format_checks(report))
    for f in report.findings:
        from trainmedic.report.terminal import format_finding
        click.echo(format_finding(f))
    if json_path:
        report.write_json(json_path)
        click.echo(f"report written to {json_path}")
    if fail_on and report.at_least(fail_on):
        sys.exit(3)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True))
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Where to write the HTML (default: RUN_DIR/report.html).")
@click.option("--tensorboard", type=click.Path(file_okay=False),
              help="Also export the run as TensorBoard event files to this folder.")
def report(run_dir, html_path, tensorboard) -> None:
    """Re-render a finished run directory (its report.json and metrics.jsonl)."""
    from trainmedic.report.html import write_html
    from trainmedic.rundir import read_run
    try:
        rep, ticks = read_run(run_dir)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="RUN_DIR") from None
    target = html_path or os.path.join(run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir), "report.html")
    click.echo(f"HTML report written to {write_html(rep, ticks, target)}")
    if tensorboard:
        from trainmedic.report.tensorboard import export_run
        export_run(ticks, rep.run.get("epochs") or [], tensorboard)
        click.echo(f"TensorBoard events written to {tensorboard}")


@main.command()
def ids() -> None:
    """List every finding id with its severity and title."""
    for t in CATALOG.values():
        click.echo(f"{t.id:<28} {t.severity:<8} {t.title}")


if __name__ == "__main__":
    main()
