"""The stage contract and the per-case machinery shared by per-patient stages."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import h5py

from vent.errors import ArtifactError
from vent.io.atomic import atomic_path
from vent.runner import RunContext, StagePlan, fingerprint_of, read_manifest

__all__ = ["Stage", "PerCaseStage", "case_file_fingerprint", "upstream_cases"]

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
        """Outputs listed in the manifest that are no longer on disk."""
        manifest = read_manifest(ctx.stage_dir(self.name)) or {}
        return [rel for rel in manifest.get("outputs", {}) if not (ctx.stage_dir(self.name) / rel).exists()]

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
            if case_file_fingerprint(path) == fingerprint:
                stats[case] = {"resumed": True}
            else:
                todo.append(case)
        if len(todo) < len(fingerprints):
            ctx.echo(f"[{self.name}] {len(fingerprints) - len(todo)} case(s) already done, {len(todo)} to compute")
        with ctx.progress.task(f"{self.name}", total=len(fingerprints)) as bar:
            bar.advance(len(fingerprints) - len(todo))
            for case in todo:
                started = time.time()
                with atomic_path(self.case_path(ctx, case)) as tmp:
                    stats[case] = self.process_case(ctx, case, tmp, fingerprints[case]) or {}
                stats[case]["seconds"] = round(time.time() - started, 2)
                bar.advance(1)
        for case in fingerprints:
            outputs[f"{case}.h5"] = fingerprints[case]
        outputs.update(self.finish(ctx, stats))
        return outputs
