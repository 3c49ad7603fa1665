"""Stage ``radiomics``: voxel-wise radiomic filtering of every phase of every case.

Reads: ``preprocess/<case>.h5``. Writes: ``radiomics/<case>.h5`` (layout in ``vent.io.artifacts``): for each of the
N analysed lung voxels, F features at each of the T phases, i.e. F radiomic *sequences* per voxel, plus the voxel's
raw CT sequence, label, RefVI value and coordinates. Config: ``radiomics``.

Discretisation: bin edges from the lung of each phase (``discretisation_scope: phase``, pyradiomics' per-image
semantics) or one range over all phases of the case (``case``). The kernel is the cube of ``kernel_mm`` (odd voxel
count) around each voxel, intersected with each phase's lung mask (``kernel_mask: phase``) or the analysis mask.
Voxels are processed in blocks aligned with the HDF5 chunks, all phases per block, so memory stays bounded by the
block size and the 2 mm arrays of one case, whatever the cohort size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ConfigError
from vent.io.artifacts import (
    VOXEL_CHUNK,
    compact_radiomics_case,
    create_radiomics_case,
    read_preprocessed_case,
    write_radiomics_voxel_data,
)
from vent.radiomics.lung_edge import carry_nearest_phase, edge_sequences
from vent.runner import RunContext
from vent.stages.base import PerCaseStage, upstream_cases

__all__ = ["RadiomicsStage", "selected_feature_specs", "filter_settings_from_config", "compute_radiomics_case"]

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
        pre = read_preprocessed_case(ctx.case_file("preprocess", case))
        return compute_radiomics_case(
            pre, ctx.config.radiomics, ctx.config.execution, out_path, fingerprint, ctx.progress
        )


def compute_radiomics_case(
    pre: Any, config: Any, execution: Any, out_path: Path, fingerprint: str, progress: Any,
    feature_ids: list[str] | None = None,
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
    scales = _phase_scales(pre, lung, config)
    attrs = _case_attrs(case, fingerprint, config, settings, scales, pre)
    counts = EmptyKernelCounts.zeros(n_phases)
    keep = np.ones(n_voxels, dtype=bool)
    with h5py.File(out_path, "w") as handle:
        features = create_radiomics_case(handle, n_voxels, n_phases, feature_ids, [s.ibsi_id for s in specs], attrs)
        with progress.task(f"radiomics {case}", total=n_voxels * n_phases) as bar:
            blocks = case_feature_blocks(pre, coords, config, settings, feature_ids, counts, bar.advance, scales)
            for start, values, kept in blocks:
                features[start : start + len(values)] = values
                keep[start : start + len(values)] = kept
        z, y, x = coords.T
        write_radiomics_voxel_data(
            handle,
            intensity_nt=pre.ct_tzyx[:, z, y, x].T,
            labels=pre.defect_zyx[z, y, x],
            refvi=pre.refvi_zyx[z, y, x],
            coords_zyx=coords,
            edge_ntc=edge_sequences(pre.phase_masks_tzyx, coords, pre.grid.spacing_mm_zyx, settings.kernel_voxels),
        )
        handle.attrs["empty_kernel"] = json.dumps(counts.to_dict(config.empty_kernel))
    if not keep.all():
        compact_radiomics_case(out_path, keep)
    if counts.total_touched:
        log.info("%s: empty-kernel policy %s: %s", case, config.empty_kernel, counts.to_dict(config.empty_kernel))
    return {"n_voxels": int(keep.sum()), "n_phases": n_phases, "empty_kernel": counts.to_dict(config.empty_kernel)}


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


def _case_attrs(
    case: str, fingerprint: str, config: Any, settings: Any, scales: list[_PhaseScale], pre: Any
) -> dict[str, Any]:
    """The radiomics file's attributes: case, fingerprint, settings (with kernel and grey levels), phases, grid."""
    return {
        "case_id": case,
        "fingerprint": fingerprint,
        "settings": json.dumps(
            {
                **json.loads(config.model_dump_json()),
                "kernel_voxels": settings.kernel_voxels,
                "n_grey_per_phase": [s.n_grey for s in scales],
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
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, values (n, T, F) float32, keep (n,) bool)`` for consecutive blocks of ``coords``.

    Every phase is filtered on its own grey scale and kernel mask; undefined voxel-phases are then handled by
    ``config.empty_kernel`` (see :mod:`vent.radiomics.lung_edge`) and tallied in ``counts``. Rows with ``keep``
    False are voxels to leave out of the analysis (their values are 0). ``scales``: the phases' grey levels when the
    caller has them (``_phase_scales``), so each phase is discretised once.
    """
    lung = pre.lung_mask_zyx > 0
    scales = scales if scales is not None else _phase_scales(pre, lung, config)
    fallback = _fallback_scales(pre, lung, config, scales) if config.empty_kernel == "analysis_mask" else None
    for start in range(0, len(coords), _BLOCK):
        block = coords[start : start + _BLOCK]
        values = _block_features(pre, scales, block, settings, feature_ids, progress)
        values, keep = _apply_empty_kernel_policy(
            values, pre, fallback, block, settings, feature_ids, config.empty_kernel, counts
        )
        yield start, values, keep


@dataclass
class _PhaseScale:
    """Grey levels of one phase on its lung scale, with the mask that bounds its kernels."""

    kernel_mask: np.ndarray
    grey: np.ndarray
    n_grey: int


def _phase_scales(pre: Any, lung: np.ndarray, config: Any) -> list[_PhaseScale]:
    """Each phase's kernel mask (its own lung or the analysis mask) and grey levels discretised over that mask."""
    from vent.radiomics import discretise

    n_phases = pre.n_phases
    masks = [(pre.phase_masks_tzyx[t] > 0) if config.kernel_mask == "phase" else lung for t in range(n_phases)]
    value_range = None
    if config.discretisation_scope == "case":
        value_range = (
            min(float(pre.ct_tzyx[t][masks[t]].min()) for t in range(n_phases)),
            max(float(pre.ct_tzyx[t][masks[t]].max()) for t in range(n_phases)),
        )
    scales = []
    for t in range(n_phases):
        grey, n_grey = discretise(
            pre.ct_tzyx[t], masks[t], bin_count=config.bin_count, bin_width=config.bin_width, value_range=value_range
        )
        scales.append(_PhaseScale(masks[t], grey, int(n_grey)))
    return scales


def _fallback_scales(pre: Any, lung: np.ndarray, config: Any, scales: list[_PhaseScale]) -> list[_PhaseScale]:
    """Kernel masks for the ``analysis_mask`` policy: phase mask | analysis mask, on the phase's own grey scale.

    The grey levels reuse the phase's bin edges (the range of its own kernel mask), so tissue that is not lung at that
    phase clips to the first or last bin and the values stay comparable with the phase's other voxels.
    """
    from vent.radiomics import discretise

    out = []
    for t, scale in enumerate(scales):
        union = scale.kernel_mask | lung
        values = pre.ct_tzyx[t][scale.kernel_mask]
        value_range = (float(values.min()), float(values.max()))
        grey, _ = discretise(
            pre.ct_tzyx[t], union, bin_count=config.bin_count, bin_width=config.bin_width, value_range=value_range
        )
        out.append(_PhaseScale(union, np.minimum(grey, scale.n_grey), scale.n_grey))
    return out


def _block_features(
    pre: Any, scales: list[_PhaseScale], block: np.ndarray, settings: Any, feature_ids: list[str], progress: Any
) -> np.ndarray:
    """(n, T, F) features of a block of centres, every phase on its own scale and kernel mask."""
    from vent.radiomics import compute_voxel_features

    out = np.empty((len(block), pre.n_phases, len(feature_ids)), dtype=np.float32)
    for t, scale in enumerate(scales):
        out[:, t, :] = compute_voxel_features(
            pre.ct_tzyx[t], scale.grey, scale.kernel_mask, block, scale.n_grey, settings,
            feature_ids=feature_ids, progress=progress,
        )
    return out


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


def _apply_empty_kernel_policy(
    out: np.ndarray,
    pre: Any,
    fallback: list[_PhaseScale] | None,
    block: np.ndarray,
    settings: Any,
    feature_ids: list[str],
    policy: str,
    counts: EmptyKernelCounts,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``radiomics.empty_kernel`` to a block (see :mod:`vent.radiomics.lung_edge`); returns (values, keep)."""
    from vent.radiomics import compute_voxel_features

    invalid = np.isnan(out).any(axis=2)
    if not invalid.any():
        return out, np.ones(len(block), dtype=bool)
    all_nan = np.isnan(out).all(axis=2)
    counts.empty += all_nan.sum(axis=0)
    counts.undefined += (invalid & ~all_nan).sum(axis=0)
    if policy == "drop":
        keep = ~invalid.any(axis=1)
        counts.dropped_voxels += int((~keep).sum())
        out[~keep] = 0.0
        return out, keep
    if policy == "analysis_mask":
        for t in np.flatnonzero(invalid.any(axis=0)):
            rows = np.flatnonzero(invalid[:, t])
            scale = fallback[t]
            out[rows, t] = compute_voxel_features(
                pre.ct_tzyx[t], scale.grey, scale.kernel_mask, block[rows], scale.n_grey, settings,
                feature_ids=feature_ids,
            )
            counts.recomputed[t] += len(rows)
        invalid = np.isnan(out).any(axis=2)
    filled, unfilled = carry_nearest_phase(out, invalid)
    counts.carried += invalid[~unfilled].sum(axis=0)
    counts.dropped_voxels += int(unfilled.sum())
    filled[unfilled] = 0.0
    return filled, ~unfilled
