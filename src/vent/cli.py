"""The ``vent`` command line (a thin Typer layer: heavy imports live inside the commands).

Exit codes: 0 success, 2 bad config or usage, 1 any other failure. Errors print one paragraph; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vent import __version__

app = typer.Typer(
    name="vent",
    help="Regional lung ventilation from 4DCT: radiomic sequences, sequence models and temporal saliency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict[str, Any] = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vent {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """vent: find compromised ventilation in a 4DCT you already have."""
    _state["debug"] = debug
    _state["quiet"] = quiet
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _fail(error: BaseException) -> None:
    from vent.errors import VentError

    if _state.get("debug"):
        traceback.print_exception(error)
    code = error.exit_code if isinstance(error, VentError) else 1
    kind = "error" if isinstance(error, VentError) else f"unexpected error ({type(error).__name__})"
    typer.secho(f"{kind}: {error}", err=True, fg=typer.colors.RED)
    if not isinstance(error, VentError) and not _state.get("debug"):
        typer.echo("run again with `vent --debug ...` for the traceback", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        typer.secho(
            "interrupted; finished artifacts are kept and the next run resumes", err=True, fg=typer.colors.YELLOW
        )
        raise typer.Exit(130) from None
    except OSError as error:
        _fail(_os_error(error))
    except Exception as error:  # noqa: BLE001 - the CLI boundary turns every error into a message
        _fail(error)


def _os_error(error: OSError) -> BaseException:
    """A disk-full or permission error as a message that names the file and what to do (finished artifacts are
    kept: every write is atomic, so the next run resumes); other OS errors unchanged."""
    import errno

    from vent.errors import ArtifactError

    where = f" writing {error.filename}" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return ArtifactError(
            f"no space left on the device{where}: free space (or move run_dir) and run the same command again; "
            "finished artifacts are kept and the run resumes"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ArtifactError(
            f"permission denied{where} ({error.strerror}): fix the folder's permissions or choose another run_dir "
            "(--run-dir)"
        )
    return error


class _RichProgress:
    """Progress bars on stderr via rich; one bar per task."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
            disable=_state.get("quiet", False),
        )

    def __enter__(self) -> _RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[Any]:
        task_id = self._progress.add_task(description, total=total)

        class _Task:
            def advance(_self, amount: float = 1) -> None:  # noqa: N805
                self._progress.advance(task_id, amount)

        try:
            yield _Task()
        finally:
            self._progress.remove_task(task_id)


def _context(config_path: Path, overrides: list[str] | None, run_dir: Path | None, progress: Any = None) -> Any:
    from vent.config import load_config
    from vent.runner import NullProgress, RunContext

    config = load_config(config_path, overrides)
    if run_dir is not None:
        config.run_dir = run_dir.resolve()
    return RunContext(config=config, progress=progress or NullProgress(), echo=typer.echo)


ConfigArg = Annotated[Path, typer.Argument(help="YAML run config, e.g. configs/demo.yaml.")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: --set train.lr=2e-4.")]
RunDirOption = Annotated[Optional[Path], typer.Option("--run-dir", help="Artifacts folder (overrides run_dir).")]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="If another vent command is writing the run folder, wait for it (else refuse).")
]


@app.command()
def run(
    config: ConfigArg,
    only: Annotated[
        Optional[str], typer.Option("--only", help="Run only this stage (upstream must be current).")
    ] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Re-run this stage and every later one.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run the selected stages even if current.")] = False,
    wait: WaitOption = False,
    run_dir: RunDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Run the pipeline: each stage runs only if its fingerprint changed; prints why it runs or is skipped."""
    with _errors():
        from vent.io.lock import run_lock
        from vent.runner import execute_plan, plan_run
        from vent.stages import all_stages, check_config
        from vent.stages.preprocess import cohort_subjects, ensure_data

        with _RichProgress() as progress:
            ctx = _context(config, overrides, run_dir, progress)
            check_config(ctx.config)
            with run_lock(ctx.run_dir, wait=wait):
                ensure_data(ctx.config, echo=typer.echo)
                check_config(ctx.config, n_cases=len(cohort_subjects(ctx.config)))
                plans = plan_run(ctx, all_stages(), only=only, start=start, force=force)
                summary = execute_plan(ctx, plans)
        ran = [row["stage"] for row in summary if row["action"] == "run"]
        total = sum(row["seconds"] for row in summary)
        typer.echo(
            f"done: {len(ran)} stage(s) run ({', '.join(ran) or 'none'}) in {total:.1f} s; artifacts in {ctx.run_dir}"
        )
        from vent.io import layout

        report = layout.report_file(ctx.run_dir, "report.html")
        if report.exists():
            typer.echo(f"report: {report}")


@app.command()
def report(
    config: ConfigArg,
    check: Annotated[
        bool,
        typer.Option("--check", help="Then open the HTML in headless Chromium: full-page screenshot, every image "
                     "loaded, no console error (needs chromium and playwright: pip install -e '.[test]')."),
    ] = False,
    wait: WaitOption = False,
    run_dir: RunDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Rebuild the report from the run's artifacts alone, in seconds: no other stage runs, and every stage it reads
    must be current (else it says which to re-run)."""
    with _errors():
        import time

        from vent.io import layout
        from vent.io.lock import run_lock
        from vent.runner import execute_plan, plan_run
        from vent.stages import all_stages, check_config

        started = time.time()
        with _RichProgress() as progress:
            ctx = _context(config, overrides, run_dir, progress)
            check_config(ctx.config)
            with run_lock(ctx.run_dir, wait=wait):
                execute_plan(ctx, plan_run(ctx, all_stages(), only="report", force=True))
        html = layout.report_file(ctx.run_dir, "report.html")
        typer.echo(f"report rebuilt in {time.time() - started:.1f} s: {html}")
        if check:
            _check_in_browser(html)


def _check_in_browser(html: Path) -> None:
    """Open ``html`` in headless Chromium; write the screenshot and ``browser_check.json`` beside it."""
    from vent.report.browser import check_report_page

    result = check_report_page(html)
    typer.echo(f"browser check {result.summary()}")
    for problem in result.problems():
        typer.secho(f"  {problem}", fg=typer.colors.RED)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def validate(
    config: ConfigArg,
    overrides: SetOption = None,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the report (every problem, by case) to this JSON file.")
    ] = None,
) -> None:
    """Check the config and read all the data (files, phases, geometry, duplicates, HU, masks) without computing.

    Every problem of every subject is listed in one pass, grouped by case; the exit code is 1 when any is an error.
    """
    with _errors():
        from vent.io.atomic import write_json
        from vent.stages import check_config
        from vent.validation import validate_dataset

        ctx = _context(config, overrides, None)
        check_config(ctx.config)
        typer.echo(f"config {config}: valid")
        data = ctx.config.data
        if data.synthetic is not None and not data.root.is_dir():
            check_config(ctx.config, n_cases=data.synthetic.cases)
            typer.echo(f"data: a synthetic cohort will be generated in {data.root} ({data.synthetic.cases} cases)")
            return
        report = validate_dataset(ctx.config, sha256=ctx.hashes().sha256)
        if report.ok:
            typer.echo(
                f"data {report.location}: {report.n_subjects} subjects, {report.n_phases} phases each, headers "
                "consistent, every file read in full (HU and masks plausible)"
            )
        colours = {"error": typer.colors.RED, "warning": typer.colors.YELLOW}
        for kind, text in report.lines():
            typer.secho(text, fg=colours.get(kind), bold=kind == "case")
        for reason_case, reason in data.exclude.items():
            typer.echo(f"  excluded {reason_case}: {reason}")
        typer.secho(report.summary(), fg=None if report.ok else typer.colors.RED)
        if json_path is not None:
            write_json(json_path, report.to_dict())
            typer.echo(f"report written to {json_path}")
        if report.n_subjects:
            check_config(ctx.config, n_cases=report.n_subjects)
        if not report.ok:
            raise typer.Exit(1)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (its train/model_card.json says everything).")],
    source: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="A VAMPIRE subject or study folder, a manifest (.csv/.yaml), or a folder "
                       "of phase images (files, or one DICOM series per sub-folder)."),
    ],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Folder for the maps (one sub-folder per case).")],
    method: Annotated[
        Optional[str], typer.Option("--method", help="Table 2 row whose fold models predict (default: the reference).")
    ] = None,
    case: Annotated[Optional[list[str]], typer.Option("--case", help="Only this case id (repeat).")] = None,
    file_format: Annotated[str, typer.Option("--format", help="nii.gz, nii, mha or nrrd.")] = "nii.gz",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Radiomics threads.")] = None,
    allow_spacing: Annotated[
        bool, typer.Option("--allow-spacing", help="Predict a case coarser than the training scans (a warning).")
    ] = False,
    match_phases: Annotated[
        bool, typer.Option("--match-phases", help="Read a case with k times the models' phases at every k-th phase.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo cases whose outputs are current.")] = False,
) -> None:
    """Apply a trained run to new patients: defect probability, binary map and fold uncertainty in each patient's
    original space, an overview PNG, and Table 2 / VAMPIRE metrics for cases that have a RefVI."""
    with _errors():
        from vent.errors import ConfigError
        from vent.predict import PredictOptions, predict_cohort
        from vent.predict.maps import FORMATS

        if file_format not in FORMATS:
            raise ConfigError(f"--format {file_format!r}: use one of {', '.join(FORMATS)}")
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ConfigError(f"--device {device!r}: use auto, cpu or cuda[:N]")
        from vent.io.lock import run_lock

        options = PredictOptions(method, file_format, device, workers, allow_spacing, match_phases)
        with _RichProgress() as progress, run_lock(out_dir.resolve()):
            summary = predict_cohort(run_dir.resolve(), source.resolve(), out_dir.resolve(), options, progress,
                                     echo=typer.echo, cases=case, force=force)
        typer.echo(f"predicted {len(summary['cases'])} case(s) with {summary['row']}: {out_dir}")
        external = summary.get("external_validation")
        if external:
            typer.echo(f"external validation on {external['n_cases']} case(s) (mean, min-max):")
            for name, value in external.items():
                if isinstance(value, dict):
                    typer.echo(f"  {name:<12} {value['mean']:.3f} ({value['min']:.3f}-{value['max']:.3f})")


@app.command()
def status(
    config: ConfigArg, run_dir: RunDirOption = None, overrides: SetOption = None,
    estimate: Annotated[bool, typer.Option(
        "--estimate/--no-estimate", help="Also estimate each stage's time from rates measured on this machine "
        "(measured once per machine, seconds; cached in ~/.cache/vent).")] = True,
) -> None:
    """Tables of stages and of training folds: state (current, stale, resume, never run, not used) and why; then
    each stage's estimated time on this machine (vent.estimate)."""
    with _errors():
        from rich.console import Console
        from rich.table import Table

        from vent.runner import plan_run
        from vent.stages import all_stages
        from vent.stages.train import TrainStage

        ctx = _context(config, overrides, run_dir)
        table = Table(title=f"vent status: {ctx.run_dir}")
        for column in ("stage", "state", "reason"):
            table.add_column(column)
        if ctx.config.data.synthetic is not None and not ctx.config.data.root.is_dir():
            for stage in all_stages():
                table.add_row(stage.name, "never run", "synthetic data not generated yet")
            Console().print(table)
            return
        plans = plan_run(ctx, all_stages())
        for plan in plans:
            table.add_row(plan.stage.name, plan.state, plan.reason)
        Console(width=160).print(table)
        if any(p.stage.name == "train" and p.action != "off" for p in plans):
            folds = Table(title="training folds")
            for column in ("row", "fold", "state", "reason"):
                folds.add_column(column)
            for state in TrainStage().fold_states(ctx):
                folds.add_row(state.row, str(state.fold), state.state, state.reason)
            Console(width=160).print(folds)
        if estimate:
            _print_estimate(ctx.config, {p.stage.name: p.state for p in plans if p.action != "off"})


def _print_estimate(config: Any, states: dict[str, str]) -> None:
    """``vent status``'s estimate table (``vent.estimate.status_table``)."""
    from rich.console import Console
    from rich.table import Table

    from vent.estimate import status_table

    found = status_table(config, states, echo=lambda message: typer.echo(message, err=True))
    if found is None:
        return
    title, rows = found
    table = Table(title=title)
    for column in ("stage", "state", "estimate", "basis"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write Subject_XX folders into (VAMPIRE layout).")],
    cases: Annotated[int, typer.Option("--cases", min=1, help="Number of subjects.")] = 6,
    modality: Annotated[
        str, typer.Option("--modality", help="pet (5 phases) or spect (10 phases), with --from-ct too.")
    ] = "pet",
    size: Annotated[
        str, typer.Option("--size", help="tiny, demo or full (a real adult lung, ~600k voxels at 2 mm).")
    ] = "demo",
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    from_ct: Annotated[
        Optional[Path],
        typer.Option("--from-ct", help="Make a semi-real cohort from this real breath-hold CT instead (HU)."),
    ] = None,
    lung_mask: Annotated[
        Optional[list[Path]],
        typer.Option("--lung-mask", help="With --from-ct: lung mask(s) on the CT grid (repeat for left/right)."),
    ] = None,
    slab_mm: Annotated[
        Optional[float],
        typer.Option("--slab-mm", help="With --from-ct: lung kept above the dome in mm (default 36; 0 = whole lung)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="With --from-ct: subjects made at once (processes; same files).")
    ] = 1,
    layout: Annotated[
        str,
        typer.Option("--layout", help="vampire (default), or nifti / dicom: the cohort rewritten under OUT_DIR in "
                     "that layout with OUT_DIR/manifest.csv (the VAMPIRE copy is kept in OUT_DIR/vampire)."),
    ] = "vampire",
) -> None:
    """Write a realistic synthetic 4DCT cohort with reference ventilation images (or a semi-real one: --from-ct)."""
    with _errors():
        from vent.errors import ConfigError
        from vent.synth import write_synthetic_cohort
        from vent.synth.export import LAYOUTS, export_cohort

        if layout != "vampire":
            if layout not in LAYOUTS:
                raise ConfigError(f"--layout {layout!r}: use vampire, {' or '.join(LAYOUTS)}")
            vampire = Path(out_dir, "vampire")
            synth(vampire, cases, modality, size, seed, from_ct, lung_mask, slab_mm, workers, "vampire")
            manifest = export_cohort(vampire, out_dir, layout, modality=None if from_ct else modality)
            typer.echo(f"rewrote it in the {layout} layout: {manifest}")
            return

        if modality not in ("pet", "spect"):
            raise ConfigError(f"--modality {modality!r}: use 'pet' or 'spect'")
        if from_ct is not None:
            from dataclasses import replace

            from vent.synth.from_ct import SemiRealSettings, write_semireal_cohort

            if not lung_mask:
                raise ConfigError("--from-ct needs at least one --lung-mask on the CT's grid")
            for path in [from_ct, *lung_mask]:
                if not path.is_file():
                    raise ConfigError(f"{path} does not exist; pass an image SimpleITK reads")
            settings = SemiRealSettings(n_phases=5 if modality == "pet" else 10)
            if slab_mm is not None:
                settings = replace(settings, slab_mm=None if slab_mm == 0 else slab_mm)
            folders = write_semireal_cohort(from_ct, list(lung_mask), out_dir, cases, seed=seed, settings=settings,
                                            workers=workers)
            typer.echo(f"wrote {len(folders)} semi-real subjects to {out_dir}")
            return
        if size not in ("tiny", "demo", "full"):
            raise ConfigError(f"--size {size!r}: use 'tiny', 'demo' or 'full'")
        folders = write_synthetic_cohort(
            out_dir,
            n_cases=cases,
            modality=modality,
            size=size,
            seed=seed,
            progress=lambda message: typer.echo(message, err=True),
        )
        typer.echo(f"wrote {len(folders)} subjects to {out_dir}")


@app.command()
def features(
    image: Annotated[Optional[Path], typer.Argument(help="Image (any format SimpleITK reads).")] = None,
    mask: Annotated[Optional[Path], typer.Argument(help="Mask on the image's grid (non-zero = inside).")] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Output HDF5 (or CSV with --roi).")] = None,
    kernel_mm: Annotated[float, typer.Option("--kernel-mm", help="Kernel edge in mm (odd voxel count).")] = 26.0,
    bins: Annotated[
        str, typer.Option("--bins", help="Fixed bin count, or 'none' for images already in grey levels.")
    ] = "64",
    bin_width: Annotated[
        Optional[float], typer.Option("--bin-width", help="Fixed bin width instead of a bin count.")
    ] = None,
    feature_ids: Annotated[
        Optional[str], typer.Option("--features", help="Comma-separated feature ids (default: all 56).")
    ] = None,
    roi: Annotated[
        bool, typer.Option("--roi", help="One value per feature over the whole mask (IBSI segment mode), CSV.")
    ] = False,
    nifti_dir: Annotated[
        Optional[Path], typer.Option("--nifti-dir", help="Also write one NIfTI per feature map.")
    ] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto (CUDA torch if present, else numba), numba or torch.")
    ] = "auto",
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="CPU threads (default: all cores).")
    ] = None,
    list_features: Annotated[
        bool, typer.Option("--list", help="List the 56 feature ids with IBSI ids and exit.")
    ] = False,
) -> None:
    """Voxel-wise radiomic feature maps (or ROI values) for any image and mask."""
    with _errors():
        from vent.errors import ConfigError

        if list_features:
            from vent.radiomics import FEATURES

            for spec in FEATURES:
                typer.echo(f"{spec.number:>2}  {spec.id:<45} {spec.ibsi_id}  {spec.name}")
            return
        if image is None or mask is None or out is None:
            raise ConfigError("vent features needs IMAGE, MASK and -o OUT (or --list)")

        if bins.lower() == "none" or bin_width is not None:
            bin_count = None
        else:
            try:
                bin_count = int(bins)
            except ValueError:
                raise ConfigError(f"--bins {bins!r}: give an integer bin count or 'none'") from None
        ids = [f.strip() for f in feature_ids.split(",")] if feature_ids else None
        from vent.radiomics import write_feature_maps

        written = write_feature_maps(
            image,
            mask,
            out,
            kernel_mm=kernel_mm,
            bin_count=bin_count,
            bin_width=bin_width,
            feature_ids=ids,
            roi=roi,
            nifti_dir=nifti_dir,
            backend=backend,
            n_workers=workers,
        )
        typer.echo(f"wrote {written}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
