"""Stage ``radiomics``: voxel-wise radiomic filtering of every phase of every case.

Reads: ``preprocess/<case>.h5``. Writes: ``radiomics/<case>.h5`` (layout in ``vent.io.artifacts``): for each of the
N analysed lung voxels, F features at each of the T phases, i.e. F radiomic *sequences* per voxel, plus the voxel's
raw CT sequence, label, RefVI value and coordinates. Config: ``radiomics``.

Discretisation: bin edges from the lung of each phase (``discretisation_scope: phase``, pyradiomics' per-image
semantics) or one range over all phases of the case (``case``). The kernel is the cube of ``kernel_mm`` (odd voxel
count) around each voxel, intersected with each phase's lung mask (``kernel_mask: phase``) or the analysis mask.
Tasks (``vent.execution``): one per case and phase computes that phase's features into
``radiomics/partial/<case>/phase_<t>.h5`` (it reads only that phase of the preprocessed case), with what
``radiomics.empty_kernel`` does within the phase (the ``analysis_mask`` recomputation) and the phase's lung-edge
channels; when a case's last phase is done, its merge task (a follow-up, run before the phases not started yet)
applies the policy across the phases (carrying, dropping), writes ``radiomics/<case>.h5`` and removes the partial
files. The merge is the one serial step of a case, so everything that can be done per phase is done in the phase
tasks. So a 10-phase patient keeps every worker busy, a crash loses at most the phases being computed (a finished
phase's file is verified and kept), and at any time only the cases being computed have partial files.
``vent predict`` computes a case in one call (:func:`compute_radiomics_case` without phase files: voxel blocks, all
phases per block); both paths write the same values bit for bit. Memory stays bounded by the block size and the
2 mm arrays of one case, whatever the cohort size.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError, ConfigError
from vent.io import layout
from vent.io.artifacts import (
    VOXEL_CHUNK,
    compact_radiomics_case,
    create_radiomics_case,
    create_radiomics_phase,
    finish_radiomics_phase,
    open_radiomics_phase,
    preprocessed_phase_count,
    read_preprocessed_case,
    read_preprocessed_phase,
    write_radiomics_voxel_data,
)
from vent.io.atomic import atomic_path
from vent.io.seals import verify_artifact
from vent.radiomics.lung_edge import carry_nearest_phase, edge_sequences, phase_edge_channels
from vent.runner import RunContext
from vent.stages.base import PerCaseStage, case_file_fingerprint, upstream_cases

__all__ = [
    "RadiomicsStage", "RadiomicsJob", "compute_radiomics_job", "selected_feature_specs", "filter_settings_from_config",
    "compute_radiomics_case", "compute_radiomics_phase",
]

log = logging.getLogger(__name__)

_BLOCK = 4 * VOXEL_CHUNK


def selected_feature_specs(feature_ids: list[str] | str) -> list[Any]:
    """The FeatureSpecs to compute, in Table 1 order; unknown ids raise ConfigError with a suggestion."""
    import difflib

    from vent.radiomics import FEATURES

    if feature_ids == "all":
        return list(FEATURES)
    known = {spec.id: spec for spec in FEATURES}
    unknown = [f for f in feature_ids if f not in known]
    if unknown:
        hints = [
            f"{u!r} (did you mean {difflib.get_close_matches(u, list(known), n=1)[0]!r}?)"
            if difflib.get_close_matches(u, list(known), n=1)
            else repr(u)
            for u in unknown
        ]
        raise ConfigError(f"radiomics.features: unknown feature id(s) {', '.join(hints)}; see `vent features --list`")
    return [spec for spec in FEATURES if spec.id in set(feature_ids)]


def filter_settings_from_config(
    config: Any, spacing_mm_zyx: tuple[float, float, float], execution: Any | None = None
) -> Any:
    """The engine's FilterSettings for a case grid (the kernel needs an isotropic grid); the engine and its threads
    come from the ``execution`` section (defaults when None)."""
    from vent.config import ExecutionConfig
    from vent.execution.threads import task_threads
    from vent.radiomics import FilterSettings, kernel_voxels_from_mm

    execution = execution or ExecutionConfig()
    if max(spacing_mm_zyx) - min(spacing_mm_zyx) > 1e-3:
        raise ConfigError(
            f"radiomics needs an isotropic grid but preprocess.spacing_mm gives {spacing_mm_zyx[::-1]} mm (x, y, z); "
            "use equal spacings (the study: 2 mm)"
        )
    return FilterSettings(
        kernel_voxels=kernel_voxels_from_mm(config.kernel_mm, spacing_mm_zyx[0]),
        bin_count=config.bin_count,
        bin_width=config.bin_width,
        masked_kernel=config.masked_kernel,
        dtype=config.dtype,
        backend=execution.radiomics_engine,
        n_workers=task_threads(execution),
    )


class RadiomicsStage(PerCaseStage):
    name = "radiomics"
    needs = ("preprocess",)
    version = "2"

    def unused_reason(self, config: Any) -> str | None:
        from vent.models.registry import needed_stages

        if "radiomics" in needed_stages(config.train.models):
            return None
        return f"no method in train.models reads radiomic sequences ({', '.join(config.train.models)})"

    def case_inputs(self, ctx: RunContext) -> dict[str, Any]:
        return {case: {"preprocess": fp} for case, fp in upstream_cases(ctx, "preprocess").items()}

    def process_case(self, ctx: RunContext, case: str, out_path: Path, fingerprint: str) -> dict[str, Any]:
        """One case in one call (all phases per voxel block); the stage itself runs phases as tasks (module
        docstring, :meth:`compute_cases`)."""
        pre = read_preprocessed_case(ctx.case_file("preprocess", case))
        return compute_radiomics_case(
            pre, ctx.config.radiomics, ctx.config.execution, out_path, fingerprint, ctx.progress
        )

    def compute_cases(
        self, ctx: RunContext, todo: dict[str, str], total: int
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """Every phase of every case in ``todo`` as a task, each case's merge as the follow-up of its last phase.

        A phase whose partial file verifies (seal, case, fingerprint, phase) is kept from an interrupted run; a case
        with every phase kept starts with its merge. Returns each case's stats (its merge's facts, with ``seconds``
        = its phases' and merge's task times) and the execution record (every task's time)."""
        from vent.execution import execution_record, run_tasks

        config = ctx.config
        waiting: dict[str, set[int]] = {}
        merges, phases = [], []
        for case, fingerprint in todo.items():
            n_phases = preprocessed_phase_count(ctx.case_file("preprocess", case))
            missing = {t for t in range(n_phases) if not phase_is_done(ctx.run_dir, case, t, fingerprint)}
            if missing:
                waiting[case] = missing
                phases += [RadiomicsJob(case, fingerprint, config, t) for t in sorted(missing)]
            else:
                merges.append(RadiomicsJob(case, fingerprint, config, None))
        if merges:
            ctx.echo(f"[radiomics] {len(merges)} case(s) with every phase already computed: merging them first")

        def follow_up(result: Any) -> list[RadiomicsJob]:
            job = result.job
            if job.phase is None:
                return []
            waiting[job.case].discard(job.phase)
            return [] if waiting[job.case] else [RadiomicsJob(job.case, job.fingerprint, config, None)]

        jobs = merges + phases
        stats: dict[str, dict[str, Any]] = {}
        seconds: dict[str, float] = {case: 0.0 for case in todo}
        results, started = [], time.perf_counter()
        with ctx.progress.task(f"radiomics ({len(todo)} case(s), by phase)", total=len(jobs) + len(waiting)) as bar:
            for result in run_tasks(config.execution, compute_radiomics_job, jobs, ctx.progress, follow_up=follow_up):
                seconds[result.job.case] += result.seconds
                if result.job.phase is None:
                    stats[result.job.case] = {**(result.value or {}), "seconds": round(seconds[result.job.case], 2)}
                results.append(result)
                bar.advance(1)
        return stats, execution_record(config.execution, results, time.perf_counter() - started, len(jobs))

    def finish(self, ctx: RunContext, stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Remove partial files left beside finished cases (a crash between a merge and its clean-up)."""
        partial = layout.radiomics_partial_dir(ctx.run_dir, "_").parent
        if partial.is_dir():
            for case in stats:
                shutil.rmtree(layout.radiomics_partial_dir(ctx.run_dir, case), ignore_errors=True)
            if not any(partial.iterdir()):
                partial.rmdir()
        return {}


@dataclass(frozen=True)
class RadiomicsJob:
    """One radiomics task (``vent.execution``): one phase of a case, or (``phase`` None) the merge of its phases.

    Attributes:
        case: The patient.
        fingerprint: The case's fingerprint, stamped in its phase files and its case file.
        config: The run's config.
        phase: The phase to compute, or None for the merge.
    """

    case: str
    fingerprint: str
    config: Any
    phase: int | None

    @property
    def label(self) -> str:
        return f"radiomics {self.case} " + ("merge" if self.phase is None else f"phase {self.phase}")


def compute_radiomics_job(job: RadiomicsJob, progress: Any) -> dict[str, Any]:
    """Task function: a phase into its partial file, or a case's merge into ``radiomics/<case>.h5`` (then its
    partial files are removed); every file written atomically. Returns the task's facts."""
    config = job.config
    pre_path = layout.case_file(config.run_dir, "preprocess", job.case)
    if job.phase is not None:
        with atomic_path(layout.radiomics_phase_file(config.run_dir, job.case, job.phase)) as tmp:
            return compute_radiomics_phase(
                pre_path, job.phase, config.radiomics, config.execution, tmp, job.fingerprint, progress
            )
    pre = read_preprocessed_case(pre_path)
    phase_files = [layout.radiomics_phase_file(config.run_dir, job.case, t) for t in range(pre.n_phases)]
    with atomic_path(layout.case_file(config.run_dir, "radiomics", job.case)) as tmp:
        facts = compute_radiomics_case(
            pre, config.radiomics, config.execution, tmp, job.fingerprint, progress, phase_files=phase_files
        )
    shutil.rmtree(layout.radiomics_partial_dir(config.run_dir, job.case), ignore_errors=True)
    return facts


def phase_is_done(run_dir: Path, case: str, phase: int, fingerprint: str) -> bool:
    """Whether a phase's partial file can be kept: it verifies against its seal, holds ``case`` at ``phase`` and
    carries the case's ``fingerprint``."""
    path = layout.radiomics_phase_file(run_dir, case, phase)
    if verify_artifact(path, case_id=case) is not None or case_file_fingerprint(path) != fingerprint:
        return False
    try:
        handle, attrs = open_radiomics_phase(path)
    except (OSError, ArtifactError):
        return False
    handle.close()
    return attrs.get("phase") == phase


def compute_radiomics_phase(
    pre_path: Path, phase: int, config: Any, execution: Any, out_path: Path, fingerprint: str, progress: Any,
    feature_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``out_path``: the features of one phase of a preprocessed case, for every analysed voxel
    (``np.argwhere`` order), by blocks of voxels, after the phase's own part of the empty-kernel policy
    (:func:`_fill_phase_empty_kernels`), with the phase's lung-edge channels and its empty-kernel tallies. What
    crosses the phases (carrying, dropping) is the merge's (:func:`compute_radiomics_case`).

    Reads only that phase's CT and mask (and, with ``discretisation_scope: case``, each phase's lung values for the
    common range). Returns the phase's facts: voxels, grey levels."""
    specs = selected_feature_specs(config.features if feature_ids is None else feature_ids)
    feature_ids = [s.id for s in specs]
    one = read_preprocessed_phase(pre_path, phase)
    lung = one.lung_mask_zyx > 0
    coords = np.argwhere(lung).astype(np.int32)
    settings = filter_settings_from_config(config, one.grid.spacing_mm_zyx, execution)
    _check_kernel_within_lung(one.case_id, coords, config.kernel_mm, settings.kernel_voxels,
                              one.grid.spacing_mm_zyx[0])
    value_range = None
    if config.discretisation_scope == "case":
        value_range = _common_range(
            (_kernel_mask(p.phase_mask_zyx, lung, config), p.ct_zyx)
            for p in (read_preprocessed_phase(pre_path, t) for t in range(one.n_phases))
        )
    scale = _phase_scale(one.ct_zyx, _kernel_mask(one.phase_mask_zyx, lung, config), config, value_range)
    fallback = _fallback_scale(one.ct_zyx, lung, config, scale) if config.empty_kernel == "analysis_mask" else None
    tallies = dict.fromkeys(_PHASE_TALLIES, 0)
    attrs = {"case_id": one.case_id, "fingerprint": fingerprint, "phase": phase, "n_grey": scale.n_grey}
    with h5py.File(out_path, "w") as handle:
        features = create_radiomics_phase(handle, len(coords), feature_ids, attrs)
        with progress.task(f"radiomics {one.case_id} phase {phase}", total=len(coords)) as bar:
            for start in range(0, len(coords), _BLOCK):
                block = coords[start : start + _BLOCK]
                values = _phase_block_features(one.ct_zyx, scale, block, settings, feature_ids, bar.advance)
                for key, count in _fill_phase_empty_kernels(
                    values, one.ct_zyx, fallback, block, settings, feature_ids
                ).items():
                    tallies[key] += count
                features[start : start + len(block)] = values
        edge = phase_edge_channels(one.phase_mask_zyx, coords, one.grid.spacing_mm_zyx, settings.kernel_voxels)
        finish_radiomics_phase(handle, edge, tallies)
    return {"n_voxels": len(coords), "n_grey": scale.n_grey}


def compute_radiomics_case(
    pre: Any, config: Any, execution: Any, out_path: Path, fingerprint: str, progress: Any,
    feature_ids: list[str] | None = None, phase_files: Sequence[Path] | None = None,
) -> dict[str, Any]:
    """Write ``out_path``: the radiomic sequences of every analysed voxel of a preprocessed case (module docstring).

    Args:
        pre: the ``PreprocessedCase``.
        config: the ``radiomics`` section.
        execution: the ``execution`` section (engine, threads).
        out_path: the radiomics HDF5 to write.
        fingerprint: stamped in the file.
        progress: the run's progress (``task(description, total)``).
        feature_ids: compute only these (``vent predict``: the features a trained model reads); None = the
            section's ``features``.
        phase_files: the phase tasks' files (:func:`compute_radiomics_phase`, phase 0 first: features with each
            phase's part of the empty-kernel policy done, edge channels, tallies, grey levels) to merge instead of
            computing them; each must hold this case, ``fingerprint``, its phase and the voxels and features here.

    Returns:
        Per-case facts: voxels kept, phases, empty-kernel counts.
    """
    specs = selected_feature_specs(config.features if feature_ids is None else feature_ids)
    feature_ids = [s.id for s in specs]
    case = pre.case_id
    settings = filter_settings_from_config(config, pre.grid.spacing_mm_zyx, execution)
    lung = pre.lung_mask_zyx > 0
    coords = np.argwhere(lung).astype(np.int32)
    _check_kernel_within_lung(case, coords, config.kernel_mm, settings.kernel_voxels, pre.grid.spacing_mm_zyx[0])
    n_voxels, n_phases = len(coords), pre.n_phases
    counts = EmptyKernelCounts.zeros(n_phases)
    keep = np.ones(n_voxels, dtype=bool)
    sources = [] if phase_files is None else _open_phase_files(phase_files, case, fingerprint, n_voxels, feature_ids,
                                                                 counts)
    raw_blocks = None if phase_files is None else _phase_file_reader([h["features"] for h in sources])
    try:
        scales, n_grey = _scales_or_phase_file_levels(pre, lung, config, sources)
        attrs = _case_attrs(case, fingerprint, config, settings, n_grey, pre)
        with h5py.File(out_path, "w") as handle:
            features = create_radiomics_case(
                handle, n_voxels, n_phases, feature_ids, [s.ibsi_id for s in specs], attrs
            )
            what = "merge" if phase_files is not None else ""
            with progress.task(f"radiomics {case} {what}".strip(), total=n_voxels * n_phases) as bar:
                blocks = case_feature_blocks(pre, coords, config, settings, feature_ids, counts, bar.advance, scales,
                                             raw_blocks=raw_blocks)
                for start, values, kept in blocks:
                    features[start : start + len(values)] = values
                    keep[start : start + len(values)] = kept
            edge = None if phase_files is None else np.stack([h["edge"][...] for h in sources], axis=1)
            _write_voxel_data(handle, pre, coords, settings.kernel_voxels, edge)
            handle.attrs["empty_kernel"] = json.dumps(counts.to_dict(config.empty_kernel))
    finally:
        for source in sources:
            source.close()
    if not keep.all():
        compact_radiomics_case(out_path, keep)
    if counts.total_touched:
        log.info("%s: empty-kernel policy %s: %s", case, config.empty_kernel, counts.to_dict(config.empty_kernel))
    return {"n_voxels": int(keep.sum()), "n_phases": n_phases, "empty_kernel": counts.to_dict(config.empty_kernel)}


def _write_voxel_data(handle: h5py.File, pre: Any, coords: np.ndarray, kernel_voxels: int,
                      edge_ntc: np.ndarray | None = None) -> None:
    """The per-voxel data beside the features: CT sequence, label, RefVI, coordinates, edge sequences (computed
    here unless given: the phase tasks' ``edge``)."""
    if edge_ntc is None:
        edge_ntc = edge_sequences(pre.phase_masks_tzyx, coords, pre.grid.spacing_mm_zyx, kernel_voxels)
    z, y, x = coords.T
    write_radiomics_voxel_data(
        handle,
        intensity_nt=pre.ct_tzyx[:, z, y, x].T,
        labels=pre.defect_zyx[z, y, x],
        refvi=pre.refvi_zyx[z, y, x],
        coords_zyx=coords,
        edge_ntc=edge_ntc,
    )


def _check_kernel_within_lung(case: str, coords: np.ndarray, kernel_mm: float, kernel_voxels: int,
                              spacing_mm: float) -> None:
    """ConfigError when the kernel is larger than the analysed lung along every axis: each kernel would then hold
    the whole lung, and no feature would vary between its voxels."""
    extent = int((coords.max(axis=0) - coords.min(axis=0) + 1).max()) if len(coords) else 0
    if kernel_voxels > extent:
        raise ConfigError(
            f"radiomics.kernel_mm = {kernel_mm:g} gives a kernel of {kernel_voxels} voxels "
            f"({kernel_voxels * spacing_mm:g} mm) but the analysed lung of {case} spans at most {extent} voxels "
            f"({extent * spacing_mm:g} mm): every kernel would hold the whole lung. Set radiomics.kernel_mm to at most "
            f"{extent * spacing_mm:g} (the study: 26)"
        )


def _open_phase_files(paths: Sequence[Path], case: str, fingerprint: str, n_voxels: int, feature_ids: list[str],
                      counts: EmptyKernelCounts) -> list[h5py.File]:
    """Open the phase files of a merge, each checked to hold this case's phase with these voxels and features; each
    phase's empty-kernel tallies are added to ``counts``."""
    opened = []
    try:
        for t, path in enumerate(paths):
            handle, attrs = open_radiomics_phase(path)
            opened.append(handle)
            found = (attrs.get("case_id"), attrs.get("fingerprint"), attrs.get("phase"),
                     handle["features"].shape, handle["edge"].shape, attrs.get("feature_ids"),
                     sorted(attrs["empty_kernel"]))
            wanted = (case, fingerprint, t, (n_voxels, len(feature_ids)), (n_voxels, 3), list(feature_ids),
                      sorted(_PHASE_TALLIES))
            if found != wanted:
                raise ArtifactError(
                    f"{path} is not phase {t} of {case} as this run computes it (case, fingerprint, phase, shapes, "
                    f"features, tallies: {found} instead of {wanted}); delete it and re-run the radiomics stage"
                )
            counts.add_phase(t, attrs["empty_kernel"])
    except BaseException:
        for handle in opened:
            handle.close()
        raise
    return opened


def _scales_or_phase_file_levels(pre: Any, lung: np.ndarray, config: Any,
                                 sources: list[h5py.File]) -> tuple[list[_PhaseScale] | None, list[int]]:
    """(scales, grey levels per phase) of a case: a merge (open phase files) takes the levels its phase tasks found
    and needs no scale; the one-call path discretises every phase (``_phase_scales``)."""
    if sources:
        return None, [int(handle.attrs["n_grey"]) for handle in sources]
    scales = _phase_scales(pre, lung, config)
    return scales, [scale.n_grey for scale in scales]


def _phase_file_reader(datasets: list[Any]) -> Callable[[int, np.ndarray], np.ndarray]:
    """(n, T, F) features of the voxel block starting at ``start`` from the phases' (N, F) datasets.

    Each phase is read contiguously, then stacked: reading straight into the strided (n, t, F) slice of the block
    (``read_direct`` with a memory selection) took 19.3 s against 2.4 s for a 300k-voxel 10-phase case."""

    def read(start: int, block: np.ndarray) -> np.ndarray:
        return np.stack([d[start : start + len(block)] for d in datasets], axis=1)

    return read


def _case_attrs(
    case: str, fingerprint: str, config: Any, settings: Any, n_grey_per_phase: list[int], pre: Any
) -> dict[str, Any]:
    """The radiomics file's attributes: case, fingerprint, settings (with kernel and grey levels), phases, grid."""
    return {
        "case_id": case,
        "fingerprint": fingerprint,
        "settings": json.dumps(
            {
                **json.loads(config.model_dump_json()),
                "kernel_voxels": settings.kernel_voxels,
                "n_grey_per_phase": n_grey_per_phase,
            }
        ),
        "phase_order": pre.attrs.get("phase_order"),
        "exhale_phase": pre.attrs.get("exhale_phase"),
        "inhale_phase": pre.attrs.get("inhale_phase"),
        **pre.grid.to_attrs(),
    }


def case_feature_blocks(
    pre: Any,
    coords: np.ndarray,
    config: Any,
    settings: Any,
    feature_ids: list[str],
    counts: EmptyKernelCounts,
    progress: Any = None,
    scales: list[_PhaseScale] | None = None,
    raw_blocks: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, values (n, T, F) float32, keep (n,) bool)`` for consecutive blocks of ``coords``.

    Every phase is filtered on its own grey scale and kernel mask; undefined voxel-phases are then handled by
    ``config.empty_kernel`` (see :mod:`vent.radiomics.lung_edge`) and tallied in ``counts``. Rows with ``keep``
    False are voxels to leave out of the analysis (their values are 0). ``scales``: the phases' grey levels when the
    caller has them (``_phase_scales``), so each phase is discretised once. ``raw_blocks(start, block)``: the
    block's (n, T, F) features as the phase tasks wrote them (each phase's part of the policy done), else they are
    computed here (and ``scales`` is unused with it).
    """
    lung = pre.lung_mask_zyx > 0
    fallback = None
    if raw_blocks is None:  # the features are computed here, each phase on its own scale
        scales = scales if scales is not None else _phase_scales(pre, lung, config)
        if config.empty_kernel == "analysis_mask":
            fallback = [_fallback_scale(pre.ct_tzyx[t], lung, config, scale) for t, scale in enumerate(scales)]
    for start in range(0, len(coords), _BLOCK):
        block = coords[start : start + _BLOCK]
        if raw_blocks is None:
            values = _block_features(pre, scales, block, settings, feature_ids, progress)
            for t in range(pre.n_phases):
                counts.add_phase(t, _fill_phase_empty_kernels(
                    values[:, t], pre.ct_tzyx[t], None if fallback is None else fallback[t], block, settings,
                    feature_ids,
                ))
        else:
            values = raw_blocks(start, block)
            if progress is not None:
                progress(len(block) * pre.n_phases)
        values, keep = _carry_or_drop(values, config.empty_kernel, counts)
        yield start, values, keep


@dataclass
class _PhaseScale:
    """Grey levels of one phase on its lung scale, with the mask that bounds its kernels."""

    kernel_mask: np.ndarray
    grey: np.ndarray
    n_grey: int


def _kernel_mask(phase_mask_zyx: np.ndarray, lung: np.ndarray, config: Any) -> np.ndarray:
    """The mask that bounds a phase's kernels: its own lung (``kernel_mask: phase``) or the analysis mask."""
    return (phase_mask_zyx > 0) if config.kernel_mask == "phase" else lung


def _common_range(phases: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(min, max) of the CT over each phase's kernel mask, all phases (``discretisation_scope: case``)."""
    lows, highs = [], []
    for mask, ct in phases:
        values = ct[mask]
        lows.append(float(values.min()))
        highs.append(float(values.max()))
    return min(lows), max(highs)


def _phase_scale(ct_zyx: np.ndarray, mask: np.ndarray, config: Any,
                 value_range: tuple[float, float] | None) -> _PhaseScale:
    """A phase's grey levels, discretised over its kernel mask (on ``value_range`` when given)."""
    from vent.radiomics import discretise

    grey, n_grey = discretise(
        ct_zyx, mask, bin_count=config.bin_count, bin_width=config.bin_width, value_range=value_range
    )
    return _PhaseScale(mask, grey, int(n_grey))


def _phase_scales(pre: Any, lung: np.ndarray, config: Any) -> list[_PhaseScale]:
    """Each phase's kernel mask (its own lung or the analysis mask) and grey levels discretised over that mask."""
    masks = [_kernel_mask(pre.phase_masks_tzyx[t], lung, config) for t in range(pre.n_phases)]
    value_range = None
    if config.discretisation_scope == "case":
        value_range = _common_range(iter(zip(masks, pre.ct_tzyx)))
    return [_phase_scale(pre.ct_tzyx[t], masks[t], config, value_range) for t in range(pre.n_phases)]


def _fallback_scale(ct_zyx: np.ndarray, lung: np.ndarray, config: Any, scale: _PhaseScale) -> _PhaseScale:
    """The kernel mask of the ``analysis_mask`` policy at one phase: phase mask | analysis mask, on the phase's own
    grey scale.

    The grey levels reuse the phase's bin edges (the range of its own kernel mask), so tissue that is not lung at that
    phase clips to the first or last bin and the values stay comparable with the phase's other voxels.
    """
    from vent.radiomics import discretise

    union = scale.kernel_mask | lung
    values = ct_zyx[scale.kernel_mask]
    value_range = (float(values.min()), float(values.max()))
    grey, _ = discretise(ct_zyx, union, bin_count=config.bin_count, bin_width=config.bin_width, value_range=value_range)
    return _PhaseScale(union, np.minimum(grey, scale.n_grey), scale.n_grey)


def _block_features(
    pre: Any, scales: list[_PhaseScale], block: np.ndarray, settings: Any, feature_ids: list[str], progress: Any
) -> np.ndarray:
    """(n, T, F) features of a block of centres, every phase on its own scale and kernel mask."""

    out = np.empty((len(block), pre.n_phases, len(feature_ids)), dtype=np.float32)
    for t, scale in enumerate(scales):
        out[:, t, :] = _phase_block_features(pre.ct_tzyx[t], scale, block, settings, feature_ids, progress)
    return out


def _phase_block_features(ct_zyx: np.ndarray, scale: _PhaseScale, block: np.ndarray, settings: Any,
                          feature_ids: list[str], progress: Any) -> np.ndarray:
    """(n, F) float32 features of a block of centres at one phase (its grey levels and kernel mask)."""
    from vent.radiomics import compute_voxel_features

    return compute_voxel_features(
        ct_zyx, scale.grey, scale.kernel_mask, block, scale.n_grey, settings, feature_ids=feature_ids,
        progress=progress,
    ).astype(np.float32, copy=False)


@dataclass
class EmptyKernelCounts:
    """What the empty-kernel policy touched in one case (voxel-phases per phase, voxels dropped)."""

    empty: np.ndarray  # (T,) voxel-phases whose kernel held no voxel of the kernel mask
    undefined: np.ndarray  # (T,) voxel-phases with a non-empty kernel but some undefined (NaN) feature
    recomputed: np.ndarray  # (T,) voxel-phases recomputed with the analysis-mask kernel
    carried: np.ndarray  # (T,) voxel-phases carried from the nearest phase
    dropped_voxels: int = 0

    @classmethod
    def zeros(cls, n_phases: int) -> EmptyKernelCounts:
        return cls(*(np.zeros(n_phases, dtype=np.int64) for _ in range(4)))

    def add_phase(self, phase: int, tallies: dict[str, int]) -> None:
        """Add one phase's tallies (:func:`_fill_phase_empty_kernels`, or a phase file's ``empty_kernel``)."""
        for key in _PHASE_TALLIES:
            getattr(self, key)[phase] += int(tallies[key])

    @property
    def total_touched(self) -> int:
        return int(self.empty.sum() + self.undefined.sum() + self.dropped_voxels)

    def to_dict(self, policy: str) -> dict[str, Any]:
        return {
            "policy": policy,
            "empty_voxel_phases": self.empty.tolist(),
            "undefined_voxel_phases": self.undefined.tolist(),
            "recomputed_voxel_phases": self.recomputed.tolist(),
            "carried_voxel_phases": self.carried.tolist(),
            "dropped_voxels": int(self.dropped_voxels),
        }


_PHASE_TALLIES = ("empty", "undefined", "recomputed")


def _fill_phase_empty_kernels(
    values_nf: np.ndarray,
    ct_zyx: np.ndarray,
    fallback: _PhaseScale | None,
    block: np.ndarray,
    settings: Any,
    feature_ids: list[str],
) -> dict[str, int]:
    """The part of ``radiomics.empty_kernel`` within one phase (:mod:`vent.radiomics.lung_edge`), in place.

    Counts the block's voxels whose kernel is empty (every feature NaN) and those with some undefined feature; with
    ``fallback`` (the ``analysis_mask`` policy, :func:`_fallback_scale`) recomputes both on the union kernel.
    Returns the tallies ``{"empty", "undefined", "recomputed"}``.
    """
    from vent.radiomics import compute_voxel_features

    nan = np.isnan(values_nf)
    invalid = nan.any(axis=1)
    if not invalid.any():
        return dict.fromkeys(_PHASE_TALLIES, 0)
    all_nan = nan.all(axis=1)
    tallies = {"empty": int(all_nan.sum()), "undefined": int((invalid & ~all_nan).sum()), "recomputed": 0}
    if fallback is not None:
        rows = np.flatnonzero(invalid)
        values_nf[rows] = compute_voxel_features(
            ct_zyx, fallback.grey, fallback.kernel_mask, block[rows], fallback.n_grey, settings,
            feature_ids=feature_ids,
        )
        tallies["recomputed"] = len(rows)
    return tallies


def _carry_or_drop(out: np.ndarray, policy: str, counts: EmptyKernelCounts) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``radiomics.empty_kernel`` across the phases, on a block's (n, T, F) values once each phase is
    filled (:func:`_fill_phase_empty_kernels`): ``drop`` leaves out every voxel with an undefined phase; the other
    policies carry each undefined voxel-phase from the nearest defined phase and drop a voxel with none. Returns
    (values, keep); left-out rows are 0."""
    invalid = np.isnan(out).any(axis=2)
    if not invalid.any():
        return out, np.ones(len(out), dtype=bool)
    if policy == "drop":
        keep = ~invalid.any(axis=1)
        counts.dropped_voxels += int((~keep).sum())
        out[~keep] = 0.0
        return out, keep
    filled, unfilled = carry_nearest_phase(out, invalid)
    counts.carried += invalid[~unfilled].sum(axis=0)
    counts.dropped_voxels += int(unfilled.sum())
    filled[unfilled] = 0.0
    return filled, ~unfilled
