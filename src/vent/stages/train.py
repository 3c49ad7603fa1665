"""Stage ``train``: every configured method of Table 2 on every patient fold, through its registry trainer.

Reads: ``split/splits.json`` (checked against the cohort; never re-split silently) and whatever each method's family
needs (``vent.models.registry``: radiomics files and selections for sequence models, preprocessed cases for rules).
Writes, per row (a method, or ``<model>@<mode>`` for the selection-mode comparison) and fold:

- ``train/<row>/fold_<k>/``: the trainer's files (``model.pt``, ``checkpoint.pt`` for learned methods) and
  ``result.json``, written last: the fold's ``identity`` (everything that decides its result), ``length``
  (``max_epochs``, ``patience``), ``threshold`` (setting, rule, value, validation figures) and the trainer's record;
- ``train/predictions/<row>/<case>.h5``: the prediction contract (``vent.io.predictions``) of each test patient;
- ``train/runs.json`` (the rows) and ``train/thresholds.json`` (per row and fold, the binary threshold).

A fold is kept when its identity, length and threshold setting are unchanged; a network resumes from its checkpoint
when only ``max_epochs`` or ``patience`` grew or only ``train.threshold`` changed; otherwise it is trained again. A
learned method without epochs (the forest) holds only the ``train`` keys its registry entry names
(``ModelSpec.train_settings``), ignores the training length, and trains again when ``train.threshold`` changes.
Adding a method trains only that method.
``vent status`` shows each fold's state and why (:meth:`TrainStage.fold_states`).

The driver decides each fold's state and builds its job; the folds to train run as tasks (``vent.execution``:
:func:`train_fold_task`, which writes the fold's files), after the registrations the CT-ventilation folds read (one
task per case). ``train/execution.json`` records how they ran.

Config: ``train`` (and ``select.mode``, ``preprocess.ground_truth.fraction`` for rules, ``execution`` for the device
and where the tasks run).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vent.cv import Fold
from vent.io import layout
from vent.io.model_card import write_model_card
from vent.io.predictions import write_prediction
from vent.io.training import read_fold_result, write_fold_result, write_runs, write_thresholds
from vent.models.registry import get_spec, needed_stages
from vent.runner import RunContext, StagePlan, diff_keys, fingerprint_of
from vent.stages.base import Stage, upstream_cases, write_execution_record
from vent.stages.split import read_splits

__all__ = ["TrainStage", "TrainingRun", "training_runs", "FoldState"]

log = logging.getLogger(__name__)

PIPELINE_ORDER = ("preprocess", "split", "radiomics", "select")
NOT_IN_FOLD_IDENTITY = ("models", "reference_model", "compare_selection_modes", "threshold", "max_epochs", "patience")
"""Train keys a fold's identity leaves out: other rows' settings, and what a kept fold can absorb (a new threshold
is chosen again on the validation patients; a longer training resumes from the checkpoint)."""


@dataclass(frozen=True)
class TrainingRun:
    """One row of Table 2: a method, and the selection mode of its features (``none`` when it reads none)."""

    row: str
    model: str
    selection: str


def training_runs(config: Any) -> list[TrainingRun]:
    """The rows of a config: learned methods in config order, the selection-mode comparison, then the untrained.

    Every radiomic model uses ``select.mode``; with ``train.compare_selection_modes`` the reference model is trained
    again on the other mode's features as ``<model>@<mode>``, so Table 2 shows what the selection mode changes.
    """
    mode = config.select.mode
    specs = [get_spec(name) for name in config.train.models]
    rows = [
        TrainingRun(s.name, s.name, mode if s.input_kind == "radiomics" else "none") for s in specs if s.learns
    ]
    reference = get_spec(config.train.reference_model)
    if config.train.compare_selection_modes and reference.input_kind == "radiomics":
        other = "paper" if mode == "nested" else "nested"
        rows.append(TrainingRun(f"{reference.name}@{other}", reference.name, other))
    return rows + [TrainingRun(s.name, s.name, "none") for s in specs if not s.learns]


@dataclass(frozen=True)
class FoldState:
    """Where one (row, fold) stands: ``current``, ``resume``, ``stale`` or ``never run``, and why."""

    row: str
    fold: int
    state: str
    reason: str


def _length(config: Any) -> dict[str, int]:
    return {"max_epochs": config.max_epochs, "patience": config.patience}


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why an identity changed, short: upstream stages by name, other keys with their old and new values."""
    upstream = [k for k in new.get("upstream", {}) if old.get("upstream", {}).get(k) != new["upstream"][k]]
    others = diff_keys(
        {k: v for k, v in old.items() if k != "upstream"}, {k: v for k, v in new.items() if k != "upstream"}
    )
    parts = ([f"upstream {', '.join(upstream)} changed"] if upstream else []) + others[:3]
    return "changed: " + "; ".join(parts) + (" ..." if len(others) > 3 else "")


def _fold_state(previous: dict[str, Any] | None, identity: dict[str, Any], config: Any) -> tuple[str, str]:
    """Compare a fold's saved ``result.json`` with what the config asks for now (module docstring)."""
    if previous is None:
        return "never run", "never run"
    if previous.get("identity") != identity:
        return "stale", _describe_change(previous.get("identity", {}), identity)
    changed = []
    if identity.get("epochs"):  # only a network's result depends on the training length
        old, new = previous.get("length", {}), _length(config)
        shrunk = [f"{k} {old.get(k)} -> {new[k]}" for k in new if old.get(k) is not None and new[k] < old[k]]
        if shrunk:
            return "stale", "trained further than now allowed: " + ", ".join(shrunk)
        changed = [f"{k} {old.get(k)} -> {new[k]}" for k in new if old.get(k) != new[k]]
    if identity.get("learns") and previous.get("threshold_setting") != config.threshold:
        changed.append(f"threshold {previous.get('threshold_setting')!r} -> {config.threshold!r}")
    if not changed:
        return "current", "identity unchanged"
    how = "resumes from its checkpoint" if identity.get("epochs") else "trains again (no checkpoint to resume)"
    return "resume", f"{how}: " + ", ".join(changed)


class TrainStage(Stage):
    name = "train"
    needs = ("split",)
    version = "2"

    def needs_for(self, config: Any) -> tuple[str, ...]:
        used = needed_stages(config.train.models) | {"split"}
        return tuple(stage for stage in PIPELINE_ORDER if stage in used)

    def input_identity(self, ctx: RunContext) -> dict[str, Any]:
        # the selection mode lives in the select section but only decides which selection train reads;
        # the defect fraction is what a rule calls
        return {"select.mode": ctx.config.select.mode, "defect_fraction": ctx.config.preprocess.ground_truth.fraction}

    def fold_identity(self, ctx: RunContext, run: TrainingRun, fold: Fold) -> dict[str, Any]:
        """Everything that decides one (row, fold) result, and nothing else: adding a method retrains no other."""
        spec = get_spec(run.model)
        config = ctx.config.train
        identity: dict[str, Any] = {
            "version": self.version,
            **asdict(run),
            "learns": spec.learns,
            "epochs": spec.trains_by_epochs,
            "params": config.models[run.model],
            "fold": asdict(fold),
            # split too: a new split changes the fold (and status must say so before the split stage re-runs)
            "upstream": {need: ctx.fingerprints.get(need) for need in dict.fromkeys(("split", *spec.needs()))},
        }
        if spec.learns:
            keys = spec.train_settings
            settings = config.model_dump(mode="json")
            identity["train"] = {
                k: v for k, v in settings.items() if k not in NOT_IN_FOLD_IDENTITY and (keys is None or k in keys)
            }
        else:
            identity["defect_fraction"] = ctx.config.preprocess.ground_truth.fraction
        return identity

    def fold_states(self, ctx: RunContext) -> list[FoldState]:
        """Every (row, fold)'s state against the current config (``ctx.fingerprints`` as planned by the runner)."""
        folds = self._folds(ctx, check=False)
        states = []
        for run in training_runs(ctx.config):
            for fold in folds:
                previous = read_fold_result(ctx.run_dir, run.row, fold.index)
                state, reason = _fold_state(previous, self.fold_identity(ctx, run, fold), ctx.config.train)
                if state == "current" and (problem := _fold_files_problem(ctx.run_dir, run.row, fold, previous)):
                    state, reason = "stale", problem
                states.append(FoldState(run.row, fold.index, state, reason))
        return states

    def _folds(self, ctx: RunContext, check: bool = True) -> list[Fold]:
        from vent.cv import load_folds

        if not check:
            path = layout.splits_file(ctx.run_dir)
            return load_folds(path)[0] if path.is_file() else []
        return read_splits(ctx.run_dir, sorted(upstream_cases(ctx, "preprocess")))

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        _set_threads(ctx.config)
        folds = self._folds(ctx)
        runs = training_runs(ctx.config)
        thresholds: dict[str, list[dict[str, Any]]] = {}
        outputs: dict[str, Any] = {}
        outputs_by_fold, record = self._train_folds(ctx, runs, folds)
        for run in runs:
            for fold in folds:
                result = outputs_by_fold[(run.row, fold.index)]
                if result.get("threshold") is not None:
                    thresholds.setdefault(run.row, []).append({"fold": fold.index, **result["threshold"]})
                outputs.update(_fold_outputs(ctx.run_dir, run.row, fold, result))
        outputs["execution.json"] = write_execution_record(ctx.run_dir, self.name, record)
        write_thresholds(ctx.run_dir, ctx.config.train.threshold, thresholds)
        write_runs(ctx.run_dir, [asdict(run) for run in runs])
        write_model_card(ctx.run_dir, model_card(ctx, runs, folds, outputs_by_fold))
        outputs["thresholds.json"] = "per row and fold: the binary threshold, its rule and the validation figures"
        outputs["runs.json"] = "the rows: method, selection mode"
        outputs["model_card.json"] = "what `vent predict` needs to apply the trained models (vent.io.model_card)"
        return outputs

    def _train_folds(
        self, ctx: RunContext, runs: list[TrainingRun], folds: list[Fold]
    ) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[str, Any]]:
        """Keep the current folds and train the others as tasks on ``execution.backend`` (``vent.execution``), the
        CT-ventilation rows' registrations first (one task per case). Returns every fold's ``result.json`` content
        and the execution record (backend, workers, each task's time)."""
        from vent.execution import execution_record, run_tasks

        results: dict[tuple[str, int], dict[str, Any]] = {}
        tasks = []
        for run in runs:
            for fold in folds:
                prepared = self._prepare_fold(ctx, run, fold)
                if isinstance(prepared, FoldTask):
                    tasks.append(prepared)
                else:
                    results[(run.row, fold.index)] = prepared
        done, started = [], time.perf_counter()
        with ctx.progress.task("train (methods x folds)", total=len(runs) * len(folds)) as bar:
            bar.advance(len(results))
            done += list(_register_cases(ctx, tasks))
            for finished in run_tasks(ctx.config.execution, train_fold_task, tasks, ctx.progress):
                job = finished.job.job
                results[(job.row, job.fold.index)] = finished.value["result"]
                ctx.echo(f"[train] {finished.job.label}: {finished.value['summary']}")
                done.append(finished)
                bar.advance(1)
        return results, execution_record(ctx.config.execution, done, time.perf_counter() - started, len(tasks))

    def _prepare_fold(self, ctx: RunContext, run: TrainingRun, fold: Fold) -> dict[str, Any] | FoldTask:
        """A current fold's ``result.json`` content (kept), or the task that resumes or (re)trains it, its folder
        made ready (emptied unless it resumes)."""
        from vent.models.jobs import FoldJob

        config = ctx.config.train
        identity = self.fold_identity(ctx, run, fold)
        previous = read_fold_result(ctx.run_dir, run.row, fold.index)
        state, reason = _fold_state(previous, identity, config)
        if state == "current" and (problem := _fold_files_problem(ctx.run_dir, run.row, fold, previous)):
            state, reason = "stale", problem
        if state == "current":
            ctx.echo(f"[train] {run.row} fold {fold.index}: kept ({reason})")
            return previous
        if state not in ("resume", "current"):
            shutil.rmtree(layout.fold_dir(ctx.run_dir, run.row, fold.index), ignore_errors=True)
        layout.fold_result_file(ctx.run_dir, run.row, fold.index).unlink(missing_ok=True)
        layout.fold_dir(ctx.run_dir, run.row, fold.index).mkdir(parents=True, exist_ok=True)
        job = FoldJob(ctx.run_dir, run.row, run.model, run.selection, fold, config, ctx.config.execution,
                      ctx.config.preprocess.ground_truth)
        return FoldTask(job, identity, _length(config), config.threshold)


@dataclass(frozen=True)
class FoldTask:
    """One (row, fold) to train, as a task (``vent.execution``): the trainer's job and what its ``result.json``
    records beside the trainer's own facts. Plain, picklable data built by the driver."""

    job: Any  # vent.models.jobs.FoldJob
    identity: dict[str, Any]
    length: dict[str, int]
    threshold_setting: Any

    @property
    def label(self) -> str:
        return f"{self.job.row} fold {self.job.fold.index}"


def train_fold_task(task: FoldTask, progress: Any) -> dict[str, Any]:
    """Task function: train one (row, fold) through its registry trainer, write the test patients' predictions and
    ``result.json`` (last). Returns ``{"result": its content, "summary": one line for the log}``."""
    from vent.execution.threads import task_threads

    job = task.job
    spec = get_spec(job.model)
    threads = task_threads(job.execution)
    if threads is not None and spec.learns:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    outcome = spec.train_fold()(job, progress)
    for prediction in outcome.predictions:
        write_prediction(layout.prediction_file(job.run_dir, job.row, prediction.case_id), prediction)
    result = {
        "stamp": fingerprint_of(task.identity, {}),
        "identity": task.identity,
        "length": task.length,
        "threshold_setting": task.threshold_setting,
        "threshold": outcome.threshold,
        "test": list(job.fold.test),
        "files": _fold_files(job.run_dir, job.row, job.fold.index),
        "seconds": time.perf_counter() - started,  # this (row, fold) end to end: trainer and prediction files
        **outcome.record,
    }
    write_fold_result(job.run_dir, job.row, job.fold.index, result)
    return {"result": result, "summary": outcome.summary}


def _register_cases(ctx: RunContext, tasks: list[FoldTask]) -> Any:
    """The registrations the CT-ventilation folds among ``tasks`` read, as one task per (setting, case) (cached
    ones return at once): two rows or folds never register one case twice, and the folds then read the cache."""
    from vent.baselines.ctvi import RegistrationJob, register_case_job, registration_key
    from vent.execution import run_tasks

    jobs: dict[tuple[str, str], RegistrationJob] = {}
    for task in tasks:
        if get_spec(task.job.model).family == "registration":
            params = ctx.config.train.model_params(task.job.model)
            for case in task.job.fold.test:
                jobs.setdefault((registration_key(params), case),
                                RegistrationJob(ctx.run_dir, case, params, ctx.config.execution))
    return run_tasks(ctx.config.execution, register_case_job, list(jobs.values()), ctx.progress)


def model_card(
    ctx: RunContext, runs: list[TrainingRun], folds: list[Fold], results: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    """The run's model card (``vent.io.model_card``): input settings, training cohort and, per row and fold, the
    model file, its features and threshold. Rows without a ``model.pt`` (rules, registration, forests) are listed
    with ``applicable: false``: ``vent predict`` applies the networks."""
    from vent.config import section_dict
    from vent.io.artifacts import read_attrs
    from vent.runner import provenance

    config = ctx.config
    cases = sorted({case for fold in folds for case in fold.all_cases()})
    attrs = [read_attrs(layout.case_file(ctx.run_dir, "preprocess", case)) for case in cases]
    first = attrs[0]
    spacings = [a["source_spacing_mm"] for a in attrs if a.get("source_spacing_mm")]
    masks = {a.get("lung_masks", "given") for a in attrs}
    rows = {}
    for run in runs:
        entries = []
        for fold in folds:
            model = layout.model_file(ctx.run_dir, run.row, fold.index)
            result = results[(run.row, fold.index)]
            entries.append({
                "fold": fold.index,
                "model_file": str(model.relative_to(ctx.run_dir)) if model.is_file() else None,
                "features": result.get("features"),
                "threshold": (result.get("threshold") or {}).get("value"),
                "test": list(fold.test),
            })
        applicable = get_spec(run.model).family == "sequence" and all(e["model_file"] for e in entries)
        rows[run.row] = {"model": run.model, "selection": run.selection, "applicable": applicable, "folds": entries}
    return {
        "provenance": provenance()["versions"],
        "n_phases": len(first["phase_order"]),
        "cohort": {
            "name": config.report.cohort_name or config.data.location.name,
            "cases": cases,
            "modality": config.data.synthetic.modality if config.data.synthetic else first.get("modality"),
            "coarsest_spacing_mm": [max(s[axis] for s in spacings) for axis in range(3)] if spacings else None,
            "lung_masks": masks.pop() if len(masks) == 1 else "mixed",
        },
        "reference_row": config.train.reference_model,
        "settings": {
            "data": {"phase_order": config.data.phase_order},
            **{section: section_dict(config, section) for section in ("preprocess", "radiomics", "train")},
        },
        "rows": rows,
    }


def _fold_files(run_dir: Path, row: str, fold: int) -> list[str]:
    """The trainer's files of a fold (``model.pt``, ``checkpoint.pt``, ...), recorded in its ``result.json``."""
    folder = layout.fold_dir(run_dir, row, fold)
    return sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def _fold_outputs(run_dir: Path, row: str, fold: Fold, result: dict[str, Any]) -> dict[str, str]:
    """A fold's files for the stage manifest (each verified when the stage is planned): result.json holding the
    fold's stamp, the trainer's files and the test patients' predictions."""
    train_dir = layout.stage_dir(run_dir, "train")
    folder = layout.fold_dir(run_dir, row, fold.index).relative_to(train_dir)
    outputs = {f"{folder}/result.json": result["stamp"]}
    outputs.update({f"{folder}/{name}": "trainer file" for name in result.get("files", [])})
    for case in fold.test:
        outputs[str(layout.prediction_file(run_dir, row, case).relative_to(train_dir))] = f"{row} prediction"
    return outputs


def _fold_files_problem(run_dir: Path, row: str, fold: Fold, result: dict[str, Any]) -> str | None:
    """Why a fold whose settings are current must still be trained again: a recorded file or a test patient's
    prediction that is missing or not what was written (``vent.io.seals``); None when every one verifies."""
    from vent.io.seals import verify_artifact

    folder = layout.fold_dir(run_dir, row, fold.index)
    if "files" not in result:
        return "its result.json lists no files (written by an older vent)"
    checks = [(folder / name, None) for name in [*result["files"], "result.json"]]
    checks += [(layout.prediction_file(run_dir, row, case), case) for case in fold.test]
    for path, case in checks:
        if (reason := verify_artifact(path, case_id=case)) is not None:
            return f"{path.relative_to(run_dir)} {reason}"
    return None


def _set_threads(config: Any) -> None:
    """torch's CPU threads from ``execution.threads`` (when any configured method is learned)."""
    if config.execution.threads is not None and any(get_spec(n).learns for n in config.train.models):
        import torch

        torch.set_num_threads(config.execution.threads)
