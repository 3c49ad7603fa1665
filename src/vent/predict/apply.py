"""Apply a run's trained fold models to one new case: preprocess, radiomics of the models' features, fold average.

For a case (``SubjectFiles``; masks and RefVI optional) and a run's model card (``vent.io.model_card``):

1. **Check** the case against the card: the phase count must equal the models' (a sequence model reads exactly that
   many steps); the native voxel size may not be coarser than the training cohort's by more than
   ``MAX_SPACING_RATIO`` on any axis (the radiomic textures of a coarser scan are not those the models learned;
   ``allow_spacing`` overrides it, recorded); a modality other than the training cohort's and masks made by
   segmentation when the training masks were given are recorded as warnings (the point of external validation).
2. **Preprocess** with the card's ``preprocess`` settings (segmenting the lungs when the case has no masks), on the
   case's own average-CT (else first-phase) grid at the card's spacing: ``vent.stages.preprocess.preprocess_subject``,
   the code that prepared the training patients.
3. **Radiomics** of the features the row's fold models read (their union), with the card's ``radiomics`` settings:
   ``vent.stages.radiomics.compute_radiomics_case``.
4. **Fold models**: every fold model of the row predicts every analysed voxel. The defect probability is the mean
   over the K folds, p = (1/K) sum_k p_k; the uncertainty is their spread, the population standard deviation
   sqrt((1/K) sum_k (p_k - p)^2) (a deep-ensemble-style disagreement, Lakshminarayanan et al. 2017, over models that
   saw different patients); the binary map is p >= the mean of the fold thresholds.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vent.errors import ConfigError, DataError
from vent.io.vampire import SubjectFiles

__all__ = [
    "MAX_SPACING_RATIO",
    "PredictOptions",
    "CasePrediction",
    "card_config",
    "check_case",
    "match_phases",
    "predict_case",
]

log = logging.getLogger(__name__)

MAX_SPACING_RATIO = 1.5
"""Most a new case's native voxel edge may exceed the coarsest training case's on any axis."""


@dataclass(frozen=True)
class PredictOptions:
    """How ``vent predict`` runs.

    Attributes:
        row: The Table 2 row whose fold models predict (default: the card's reference row).
        file_format: ``nii.gz``, ``nii``, ``mha`` or ``nrrd`` for the maps.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: Radiomics threads (None = all cores).
        allow_spacing: Predict a case coarser than the training cohort (recorded as a warning).
        match_phases: A case with k times the models' phase count is read at every k-th phase (``match_phases``).
    """

    row: str | None = None
    file_format: str = "nii.gz"
    device: str = "auto"
    workers: int | None = None
    allow_spacing: bool = False
    match_phases: bool = False


@dataclass
class CasePrediction:
    """One case's prediction on its analysis grid (voxels of ``coords_zyx`` on ``pre.grid``) and its facts."""

    case_id: str
    pre: Any
    coords_zyx: np.ndarray
    fold_probabilities: np.ndarray
    thresholds: list[float]
    labels: np.ndarray | None
    refvi: np.ndarray | None
    warnings: list[str] = field(default_factory=list)

    @property
    def probability(self) -> np.ndarray:
        return self.fold_probabilities.mean(axis=0)

    @property
    def uncertainty(self) -> np.ndarray:
        return self.fold_probabilities.std(axis=0)

    @property
    def threshold(self) -> float:
        return float(np.mean(self.thresholds))


def card_row(card: dict[str, Any], row: str | None) -> tuple[str, dict[str, Any]]:
    """The row to predict with (the reference row by default), checked to be one ``vent predict`` can apply."""
    row = row or card["reference_row"]
    rows = card["rows"]
    applicable = [name for name, entry in rows.items() if entry["applicable"]]
    if row not in rows:
        raise ConfigError(f"--method {row!r} is not a row of this run; rows that predict: {', '.join(applicable)}")
    if not rows[row]["applicable"]:
        raise ConfigError(
            f"--method {row!r} ({rows[row]['model']}) has no fold networks to apply (a rule, registration or forest "
            f"row); rows that predict: {', '.join(applicable) or 'none'}"
        )
    return row, rows[row]


def card_config(card: dict[str, Any], files: SubjectFiles, options: PredictOptions, work_dir: Path) -> Any:
    """A RunConfig holding the card's settings, for the functions that prepared the training patients."""
    from vent.config import config_from_dict

    settings = card["settings"]
    raw = {
        "run_dir": str(work_dir),
        "data": {"root": str(files.folder), "phase_order": settings["data"]["phase_order"]},
        "preprocess": settings["preprocess"],
        "radiomics": settings["radiomics"],
        "train": settings["train"],
        "execution": {"device": options.device, "threads": options.workers},  # one case at a time, in this process
    }
    return config_from_dict(raw, work_dir, "the run's model card")


def check_case(card: dict[str, Any], files: SubjectFiles, native_spacing: tuple[float, ...],
               options: PredictOptions) -> list[str]:
    """Refuse a case the models cannot read (phase count, coarser voxels); return the recorded warnings."""
    n_phases = card["n_phases"]
    if len(files.phase_images) != n_phases:
        raise DataError(
            f"{files.case_id} has {len(files.phase_images)} phases but the models of this run read {n_phases} "
            f"(one step per phase of the training 4DCTs); give a 4DCT with {n_phases} phases, pass --match-phases "
            f"when it has a multiple of {n_phases} (every k-th phase is read), or train on a cohort with "
            f"{len(files.phase_images)}"
        )
    warnings = []
    coarsest = card["cohort"].get("coarsest_spacing_mm")
    if coarsest:
        ratio = max(n / c for n, c in zip(native_spacing, coarsest))
        if ratio > MAX_SPACING_RATIO:
            message = (
                f"{files.case_id}: voxels of {_mm(native_spacing)} mm are {ratio:.1f}x coarser than the coarsest "
                f"training case's ({_mm(coarsest)} mm); the radiomic textures of a coarser scan are not the ones the "
                "models learned"
            )
            if not options.allow_spacing:
                raise DataError(message + "; pass --allow-spacing to predict anyway (recorded as a warning)")
            warnings.append(message)
    trained_on = card["cohort"].get("modality")
    if files.modality and trained_on and files.modality.lower() != str(trained_on).lower():
        warnings.append(f"{files.case_id}: modality {files.modality} but the models were trained on {trained_on}")
    if not files.has_masks and card["cohort"].get("lung_masks", "given") == "given":
        warnings.append(f"{files.case_id}: lung masks segmented here; the training cases came with masks")
    return warnings


def match_phases(files: SubjectFiles, n_phases: int) -> tuple[SubjectFiles, str | None]:
    """The case read at every k-th phase when it has k times ``n_phases`` (k > 1), else unchanged.

    The phases of a 4DCT sample one breathing cycle evenly, so every k-th of k*n phases samples the same n
    breathing states as an n-phase 4DCT (a 10-phase SPECT-study 4DCT read by a 5-phase PET-study model: phases 1, 3,
    5, 7, 9 of 0%, 20%, ... 80% of the cycle). Returns the case and a note for its record (None when unchanged).
    """
    from dataclasses import replace

    count = len(files.phase_images)
    if count == n_phases or count % n_phases:
        return files, None
    step = count // n_phases
    picked = replace(
        files,
        phase_images=files.phase_images[::step],
        phase_masks=files.phase_masks[::step],
        phase_numbers=files.phase_numbers[::step],
    )
    note = (f"{files.case_id}: {count} phases read at every {step}th ({list(picked.phase_numbers)}) for models of "
            f"{n_phases} phases (--match-phases)")
    return picked, note


def _mm(values: Any) -> str:
    return " x ".join(f"{float(v):.2f}" for v in values)


def predict_case(
    card: dict[str, Any], run_dir: Path, files: SubjectFiles, options: PredictOptions, progress: Any
) -> CasePrediction:
    """Steps 1-4 of the module docstring for one case; the radiomics file lives in a temporary folder."""
    from vent.io.images import read_header
    from vent.stages.preprocess import preprocess_subject
    from vent.stages.radiomics import compute_radiomics_case

    row, entry = card_row(card, options.row)
    note = None
    if options.match_phases:
        files, note = match_phases(files, card["n_phases"])
    native = read_header(files.average_image or files.phase_images[0]).GetSpacing()
    warnings = check_case(card, files, tuple(native), options) + ([note] if note else [])
    with tempfile.TemporaryDirectory(prefix=f"vent-predict-{files.case_id}-") as work:
        config = card_config(card, files, options, Path(work))
        pre = preprocess_subject(files, config)
        features = sorted({f for fold in entry["folds"] for f in fold["features"] or []})
        radiomics_path = Path(work, "radiomics.h5")
        compute_radiomics_case(pre, config.radiomics, config.execution, radiomics_path, "predict", progress,
                               feature_ids=features or None)
        probabilities = fold_probabilities(run_dir, entry, radiomics_path, config, progress, row)
        from vent.io.artifacts import open_radiomics_case

        source = open_radiomics_case(radiomics_path)
        coords = source.coords()
        has_reference = bool(pre.attrs.get("has_reference"))
        return CasePrediction(
            case_id=files.case_id,
            pre=pre,
            coords_zyx=coords,
            fold_probabilities=probabilities,
            thresholds=[float(fold["threshold"]) for fold in entry["folds"]],
            labels=source.labels() if has_reference else None,
            refvi=source.refvi() if has_reference else None,
            warnings=warnings,
        )


def fold_probabilities(
    run_dir: Path, entry: dict[str, Any], radiomics_path: Path, config: Any, progress: Any, row: str
) -> np.ndarray:
    """(K folds, N voxels) defect probabilities of every fold model of a row on one radiomics file."""
    from vent.models.data import edge_channel_index
    from vent.models.sequence import ModelInputs, feature_positions, load_fold_model
    from vent.models.training import predict_proba

    out = []
    with progress.task(f"predict {row} (folds)", total=len(entry["folds"])) as bar:
        for fold in entry["folds"]:
            model, payload = load_fold_model(Path(run_dir, fold["model_file"]))
            inputs = ModelInputs.from_payload(payload)
            if inputs.kind == "radiomics":
                inputs.positions = feature_positions(radiomics_path, inputs.feature_ids)
            inputs.edge_index = edge_channel_index(radiomics_path, inputs.edge_channels)
            batches = inputs.batches([radiomics_path], config.train.batch_size, shuffle=False)
            out.append(predict_proba(model, batches, device=config.execution.device))
            bar.advance(1)
    return np.stack(out).astype(np.float32)
