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
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ConfigError
from vent.io.artifacts import VOXEL_CHUNK, create_radiomics_case, read_preprocessed_case, write_radiomics_voxel_data
from vent.runner import RunContext
from vent.stages.base import PerCaseStage, upstream_cases

__all__ = ["RadiomicsStage", "selected_feature_specs", "filter_settings_from_config"]

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


def filter_settings_from_config(config: Any, spacing_mm_zyx: tuple[float, float, float]) -> Any:
    """The engine's FilterSettings for a case grid (the kernel needs an isotropic grid)."""
    from vent.radiomics import FilterSettings, kernel_voxels_from_mm

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
        backend=config.backend,
        n_workers=config.workers,
    )


class RadiomicsStage(PerCaseStage):
    name = "radiomics"
    needs = ("preprocess",)
    version = "1"

    def case_inputs(self, ctx: RunContext) -> dict[str, Any]:
        return {case: {"preprocess": fp} for case, fp in upstream_cases(ctx, "preprocess").items()}

    def process_case(self, ctx: RunContext, case: str, out_path: Path, fingerprint: str) -> dict[str, Any]:
        from vent.radiomics import compute_voxel_features, discretise

        config = ctx.config.radiomics
        specs = selected_feature_specs(config.features)
        feature_ids = [s.id for s in specs]
        pre = read_preprocessed_case(ctx.case_file("preprocess", case))
        settings = filter_settings_from_config(config, pre.grid.spacing_mm_zyx)
        lung = pre.lung_mask_zyx > 0
        coords = np.argwhere(lung).astype(np.int32)
        n_voxels, n_phases = len(coords), pre.n_phases

        kernel_masks = [
            (pre.phase_masks_tzyx[t] > 0) if config.kernel_mask == "phase" else lung for t in range(n_phases)
        ]
        value_range = None
        if config.discretisation_scope == "case":
            lows = [float(pre.ct_tzyx[t][kernel_masks[t]].min()) for t in range(n_phases)]
            highs = [float(pre.ct_tzyx[t][kernel_masks[t]].max()) for t in range(n_phases)]
            value_range = (min(lows), max(highs))
        greys, n_greys = [], []
        for t in range(n_phases):
            grey, n_grey = discretise(
                pre.ct_tzyx[t],
                kernel_masks[t],
                bin_count=config.bin_count,
                bin_width=config.bin_width,
                value_range=value_range,
            )
            greys.append(grey)
            n_greys.append(int(n_grey))

        z, y, x = coords.T
        attrs = {
            "case_id": case,
            "fingerprint": fingerprint,
            "settings": json.dumps(
                {
                    **json.loads(config.model_dump_json()),
                    "kernel_voxels": settings.kernel_voxels,
                    "n_grey_per_phase": n_greys,
                }
            ),
            "phase_order": pre.attrs.get("phase_order"),
            **pre.grid.to_attrs(),
        }
        with h5py.File(out_path, "w") as handle:
            features = create_radiomics_case(handle, n_voxels, n_phases, feature_ids, [s.ibsi_id for s in specs], attrs)
            with ctx.progress.task(f"radiomics {case}", total=n_voxels * n_phases) as bar:
                for start in range(0, n_voxels, _BLOCK):
                    block = coords[start : start + _BLOCK]
                    out = np.empty((len(block), n_phases, len(feature_ids)), dtype=np.float32)
                    for t in range(n_phases):
                        out[:, t, :] = compute_voxel_features(
                            pre.ct_tzyx[t],
                            greys[t],
                            kernel_masks[t],
                            block,
                            n_greys[t],
                            settings,
                            feature_ids=feature_ids,
                            progress=bar.advance,
                        )
                    features[start : start + len(block)] = out
            write_radiomics_voxel_data(
                handle,
                intensity_nt=pre.ct_tzyx[:, z, y, x].T,
                labels=pre.defect_zyx[z, y, x],
                refvi=pre.refvi_zyx[z, y, x],
                coords_zyx=coords,
            )
        n_nan = 0
        with h5py.File(out_path, "r") as handle:
            for start in range(0, n_voxels, _BLOCK):
                n_nan += int(np.isnan(handle["features"][start : start + _BLOCK]).sum())
        if n_nan:
            log.warning("%s: %d feature values are NaN (kernels with no valid GLCM/GLRLM direction)", case, n_nan)
        return {"n_voxels": n_voxels, "n_phases": n_phases, "n_nan": n_nan}
