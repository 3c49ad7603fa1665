"""The stage contract and the per-case machinery shared by per-patient stages (each case a task: ``vent.execution``)."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import h5py

from vent.errors import ArtifactError
from vent.io.atomic import atomic_path
from vent.io.seals import verify_artifact
from vent.runner import RunContext, StagePlan, fingerprint_of, read_manifest

__all__ = ["Stage", "PerCaseStage", "CaseJob", "compute_case_job", "case_file_fingerprint", "upstream_cases"]

log = logging.getLogger(__name__)


class Stage(ABC):
    """A pipeline stage.

    Class attributes:
        name: the stage's name: its module, config section, output folder and CLI flag value.
        sections: further config sections it reads (besides its own).
        needs: stages whose artifacts it reads (``needs_for`` may narrow them per config).
        version: bump when the stage's output for the same inputs changes (forces re-runs).
    """

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"

    def needs_for(self, config: Any) -> tuple[str, ...]:
        """The stages this one reads under ``config`` (default: ``needs``; train's depend on its methods)."""
        return self.needs

    def unused_reason(self, config: Any) -> str | None:
        """Why ``config`` does not use this stage (e.g. no method reads radiomics), or None when it does."""
        return None

    def definition(self, ctx: RunContext) -> dict[str, Any]:
        """Name, version and the config sections the stage reads: the part of its fingerprint it owns."""
        from vent.config import section_dict

        sections = (self.name, *self.sections)
        return {
            "stage": self.name,
            "version": self.version,
            "config": {s: section_dict(ctx.config, s) for s in sections if hasattr(ctx.config, s)},
        }

    def input_identity(self, ctx: RunContext) -> dict[str, Any]:
        """What identifies the stage's inputs beyond its upstream fingerprints (files, cases). Default: nothing."""
        return {}

    def missing_outputs(self, ctx: RunContext) -> list[str]:
        """Outputs listed in the manifest that are missing or whose content is not what was written
        (``vent.io.seals.verify_artifact``), each as ``path (why)``."""
        manifest = read_manifest(ctx.stage_dir(self.name)) or {}
        out = []
        for rel in manifest.get("outputs", {}):
            reason = verify_artifact(ctx.stage_dir(self.name) / rel, case_id=self.output_case(rel))
            if reason is not None:
                out.append(f"{rel} ({reason})")
        return out

    def output_case(self, rel: str) -> str | None:
        """The case an output file must hold (its ``case_id``), or None for a cohort-level output."""
        return None

    @abstractmethod
    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        """Do the work; return ``{relative output path: short description}`` for the manifest."""


def case_file_fingerprint(path: Path) -> str | None:
    """The fingerprint stamped in a per-case HDF5 artifact, or None if absent/unreadable."""
    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("fingerprint")
            return value.decode() if isinstance(value, bytes) else value
    except (OSError, KeyError):
        return None


def case_is_done(path: Path, case: str, fingerprint: str) -> bool:
    """Whether a per-case artifact can be kept: its content verifies against its seal, it holds ``case`` and it is
    stamped with ``fingerprint`` (anything else is recomputed, never trusted)."""
    return verify_artifact(path, case_id=case) is None and case_file_fingerprint(path) == fingerprint


@dataclass(frozen=True)
class CaseJob:
    """One case of a per-case stage as a task (``vent.execution``): plain, picklable data built by the driver.

    Attributes:
        stage: The stage's name (the worker builds the stage with ``vent.stages.get_stage``).
        case: The patient.
        fingerprint: The case's fingerprint, stamped in its file.
        config: The run's config (frozen; the worker reads its inputs from the run folder and the data it names).
    """

    stage: str
    case: str
    fingerprint: str
    config: Any

    @property
    def label(self) -> str:
        return f"{self.stage} {self.case}"


def compute_case_job(job: CaseJob, progress: Any) -> dict[str, Any]:
    """Task function: ``process_case`` of one case into its ``<case>.h5``, written atomically. Returns its stats."""
    from vent.stages import get_stage

    stage = get_stage(job.stage)
    ctx = RunContext(config=job.config, progress=progress)
    with atomic_path(stage.case_path(ctx, job.case)) as tmp:
        return stage.process_case(ctx, job.case, tmp, job.fingerprint) or {}


def write_execution_record(run_dir: Path, stage: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write a stage's ``execution.json`` (``vent.execution.execution_record``); returns the record, which is also
    the value of its entry in the stage manifest's outputs."""
    from vent.io import layout
    from vent.io.atomic import write_json

    write_json(layout.execution_file(run_dir, stage), record)
    return record


def upstream_cases(ctx: RunContext, stage: str) -> dict[str, str]:
    """``{case: case fingerprint}`` of an upstream per-case stage, as it will be after this run.

    Before the upstream stage has run, the planned identities are computed from its own inputs.
    """
    from vent.stages import get_stage  # local import: registry imports this module

    upstream = get_stage(stage)
    if not isinstance(upstream, PerCaseStage):
        raise ArtifactError(f"stage {stage} is not a per-case stage")
    return upstream.case_fingerprints(ctx)


class PerCaseStage(Stage):
    """A stage that writes one ``<case>.h5`` per patient and resumes case by case.

    Each case's fingerprint = hash(stage definition, the case's own input identity); it is stamped into the HDF5
    file as the attribute ``fingerprint``, so a re-run keeps every case whose stamp matches.
    """

    @abstractmethod
    def case_inputs(self, ctx: RunContext) -> dict[str, Any]:
        """``{case: identity}`` of every case's inputs (file hashes, upstream case fingerprints)."""

    @abstractmethod
    def process_case(self, ctx: RunContext, case: str, out_path: Path, fingerprint: str) -> dict[str, Any]:
        """Compute one case and write it to ``out_path`` (a temporary name); stamp ``fingerprint``. Return stats."""

    def case_fingerprints(self, ctx: RunContext) -> dict[str, str]:
        definition = self.definition(ctx)
        return {
            case: fingerprint_of(definition, {"case": case, "inputs": identity})
            for case, identity in self.case_inputs(ctx).items()
        }

    def input_identity(self, ctx: RunContext) -> dict[str, Any]:
        return self.case_fingerprints(ctx)

    def case_path(self, ctx: RunContext, case: str) -> Path:
        return ctx.case_file(self.name, case)

    def output_case(self, rel: str) -> str | None:
        return rel[: -len(".h5")] if rel.endswith(".h5") and "/" not in rel else None

    def compute_cases(
        self, ctx: RunContext, todo: dict[str, str], total: int
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Compute the ``{case: fingerprint}`` of ``todo`` as tasks on ``execution.backend`` (``vent.execution``):
        each writes its own ``<case>.h5`` atomically, so a case that finished stays when another fails. Returns each
        case's stats (with the task's ``seconds``) and the execution record (backend, workers, per-task times)."""
        from vent.execution import execution_record, run_tasks

        jobs = [CaseJob(self.name, case, fingerprint, ctx.config) for case, fingerprint in todo.items()]
        stats, results, started = {}, [], time.perf_counter()
        with ctx.progress.task(f"{self.name}", total=total) as bar:
            bar.advance(total - len(todo))
            for result in run_tasks(ctx.config.execution, compute_case_job, jobs, ctx.progress):
                stats[result.job.case] = {**(result.value or {}), "seconds": round(result.seconds, 2)}
                results.append(result)
                bar.advance(1)
        return stats, execution_record(ctx.config.execution, results, time.perf_counter() - started, len(jobs))

    def finish(self, ctx: RunContext, stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Hook for cohort-level outputs after all cases (e.g. a summary CSV). Returns extra manifest outputs."""
        return {}

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        fingerprints = self.case_fingerprints(ctx)
        outputs: dict[str, Any] = {}
        stats: dict[str, dict[str, Any]] = {}
        todo = []
        for case, fingerprint in fingerprints.items():
            path = self.case_path(ctx, case)
            if case_is_done(path, case, fingerprint):
                stats[case] = {"resumed": True}
            else:
                todo.append(case)
        if len(todo) < len(fingerprints):
            ctx.echo(f"[{self.name}] {len(fingerprints) - len(todo)} case(s) already done, {len(todo)} to compute")
        computed, record = self.compute_cases(ctx, {case: fingerprints[case] for case in todo}, len(fingerprints))
        stats = {case: stats.get(case) or computed[case] for case in fingerprints}  # case order, not finishing order
        outputs["execution.json"] = write_execution_record(ctx.run_dir, self.name, record)
        for case in fingerprints:
            outputs[f"{case}.h5"] = fingerprints[case]
        outputs.update(self.finish(ctx, stats))
        return outputs
