"""One interface over the lung segmenters, and the per-case policy (per phase, or once on the average).

``SEGMENTERS`` is the registry: a name -> a function ``(ct: sitk.Image, settings) -> (sitk.Image, dict)`` returning
a uint8 lung mask (1 = lung) on the CT's grid and what it found (``lungs_found``; ``warning`` when something is off,
e.g. one lung only; the warning is logged and recorded in the case's segmentation facts). ``classical`` is
:func:`vent.segmentation.classical.segment_lungs` (no weights). ``lungmask`` is the U-net R231 of Hofmanninger et
al., "Automatic lung segmentation in routine imaging is primarily a data diversity problem, not a methodology
problem", Eur Radiol Exp 4:50 (2020), through its own package (``pip install lungmask``), which downloads its
weights on first use; vent never bundles them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import SimpleITK as sitk

from vent.errors import ConfigError, DataError

__all__ = ["SEGMENTERS", "segment_image", "segment_case"]

log = logging.getLogger(__name__)


def _classical(ct: sitk.Image, settings: Any) -> tuple[sitk.Image, dict[str, Any]]:
    from vent.segmentation.classical import segment_lungs

    masks = segment_lungs(ct)
    return masks.combined(), {k: masks.facts[k] for k in ("lungs_found", "warning") if k in masks.facts}


def _lungmask(ct: sitk.Image, settings: Any) -> tuple[sitk.Image, dict[str, Any]]:
    """lungmask's ``LMInferer(modelname).apply(image)``: labels (Z, Y, X) on the image's grid, 1 right, 2 left."""
    try:
        from lungmask import LMInferer
    except ImportError:
        raise ConfigError(
            "preprocess.segmentation.backend: 'lungmask' needs the lungmask package (pip install lungmask), which "
            "downloads its U-net weights on first use; install it, or use backend: classical (no weights)"
        ) from None
    try:
        inferer = LMInferer(modelname=settings.lungmask_model)
        labels = inferer.apply(ct)
    except Exception as error:  # noqa: BLE001 - a download or load failure is reported with its cause
        raise DataError(
            f"lungmask could not load or run model {settings.lungmask_model!r} ({type(error).__name__}: {error}); "
            "its weights are downloaded on first use, so check the network, or use backend: classical"
        ) from None
    labels = np.asarray(labels)
    mask = sitk.GetImageFromArray((labels > 0).astype(np.uint8))
    mask.CopyInformation(ct)
    found = int(np.isin([1, 2], labels).sum())
    facts: dict[str, Any] = {"lungs_found": found}
    if found == 1:
        facts["warning"] = "lungmask found one lung only; the other lung's mask is empty"
    return mask, facts


Segmenter = Callable[[sitk.Image, Any], tuple[sitk.Image, dict[str, Any]]]
SEGMENTERS: dict[str, Segmenter] = {"classical": _classical, "lungmask": _lungmask}


def segment_image(ct: sitk.Image, settings: Any, what: str) -> tuple[sitk.Image, dict[str, Any]]:
    """The lung mask of one CT by ``settings.backend`` and the segmenter's facts; a failure names ``what`` (the
    file), a warning is logged with it."""
    try:
        segmenter = SEGMENTERS[settings.backend]
    except KeyError:
        raise ConfigError(
            f"preprocess.segmentation.backend {settings.backend!r} is unknown; use one of {', '.join(SEGMENTERS)}"
        ) from None
    try:
        mask, facts = segmenter(ct, settings)
    except DataError as error:
        raise DataError(f"lung segmentation of {what} failed: {error}") from None
    if not sitk.GetArrayViewFromImage(mask).any():
        raise DataError(f"lung segmentation of {what} found no lung; give lung masks for this case")
    if facts.get("warning"):
        log.warning("lung segmentation of %s: %s", what, facts["warning"])
    return mask, facts


def segment_case(
    phases: list[sitk.Image], average: sitk.Image | None, settings: Any, names: list[str]
) -> tuple[list[sitk.Image], dict[str, Any]]:
    """Lung masks for every phase of a case: each phase segmented (``mode: per_phase``), or one mask of the
    average CT (the phases' voxel-wise mean when there is none) used for every phase (``mode: average``).

    Args:
        phases: the phase CTs (HU), on one grid (checked before).
        average: the average CT, or None.
        settings: ``preprocess.segmentation``.
        names: the phase files, for messages.

    Returns:
        (one uint8 mask per phase on the phases' grid, facts for the case's attributes: ``lungs_found`` per
        segmented image and ``warnings``, each naming its image).
    """
    facts: dict[str, Any] = {"backend": settings.backend, "mode": settings.mode}
    found: list[dict[str, Any]] = []
    if settings.mode == "per_phase":
        masks = []
        for image, name in zip(phases, names):
            mask, image_facts = segment_image(image, settings, name)
            masks.append(mask)
            found.append({"image": name, **image_facts})
    else:
        if average is None:
            mean = np.mean([sitk.GetArrayViewFromImage(p).astype(np.float32) for p in phases], axis=0)
            average = sitk.GetImageFromArray(mean)
            average.CopyInformation(phases[0])
            facts["segmented"] = "mean of the phases"
        mask, image_facts = segment_image(average, settings, "the average CT")
        found.append({"image": "the average CT", **image_facts})
        mask = sitk.Resample(mask, phases[0], sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        masks = [mask] * len(phases)
    facts["lungs_found"] = [f.get("lungs_found") for f in found]
    facts["warnings"] = [f"{f['image']}: {f['warning']}" for f in found if f.get("warning")]
    voxel_ml = float(np.prod(phases[0].GetSpacing())) / 1000.0
    facts["lung_volume_ml"] = [round(float(sitk.GetArrayViewFromImage(m).sum()) * voxel_ml, 1) for m in masks]
    return masks, facts
