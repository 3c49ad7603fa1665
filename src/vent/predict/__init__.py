"""``vent predict RUN_DIR INPUT -o OUT``: a trained run's defect maps for new patients, in their original space.

For every case of INPUT (``vent.predict.inputs``) it applies the run's fold models (``vent.predict.apply``) and
writes, under ``OUT/<case>/`` (``vent.io.layout.predict_output_file``):

- ``<case>_probability``, ``<case>_defect``, ``<case>_uncertainty`` and ``<case>_lung`` in the format asked
  (NIfTI by default, or MHA / NRRD) on the case's original grid (``vent.predict.maps``);
- ``<case>_overview.png`` (and ``.svg``): CT, probability, binary map and uncertainty, axial and coronal;
- ``<case>_prediction.json``: the model, folds, thresholds, warnings, lung-mask origin, phase order, volumes and,
  when the case has a RefVI, its metrics.

With RefVIs (external validation: a model trained on one study tested on another) every case is also scored like
Table 2 (Dice, AUC, sensitivity, accuracy of the analysed voxels against the ground truth derived with the model's
own ground-truth settings) and like the VAMPIRE challenge (Spearman r_s of 1 - p against the RefVI, DSC of the low-
and high-function regions): ``OUT/metrics.csv`` per patient and the mean (min-max) in ``OUT/summary.json``.
A case whose outputs exist for the same model card and input files is kept (``--force`` redoes it), so an
interrupted cohort resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from vent.errors import DataError
from vent.io import layout
from vent.io.atomic import write_json, write_text
from vent.io.model_card import read_model_card
from vent.predict.apply import CasePrediction, PredictOptions, card_row, predict_case
from vent.predict.inputs import resolve_cases

__all__ = ["PredictOptions", "predict_cohort", "score_case"]

KINDS = ("probability", "defect", "uncertainty", "lung")


def _input_key(card_text: str, files: Any, row: str, options: PredictOptions) -> str:
    """Identity of a case's prediction: the model card, the row, the format, and every input file's size and
    modification time (cheap to recompute for a 10-phase case; a rewritten file changes it)."""
    stats = []
    for path in files.all_files():
        for item in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            stat = item.stat()
            stats.append([str(item), stat.st_size, stat.st_mtime_ns])
    text = json.dumps({"card": card_text, "row": row, "format": options.file_format, "files": stats})
    return hashlib.sha256(text.encode()).hexdigest()


def score_case(prediction: CasePrediction, fraction: float) -> dict[str, float]:
    """Table 2 metrics (p >= threshold) and VAMPIRE metrics (1 - p against the RefVI) of one case's voxels."""
    from vent.evaluation import score_patient, vampire_metrics

    metrics = score_patient(prediction.labels, prediction.probability, prediction.threshold)
    return {**metrics, **vampire_metrics(1.0 - prediction.probability, prediction.refvi, fraction)}


def predict_cohort(
    run_dir: Path, source: Path, out_dir: Path, options: PredictOptions, progress: Any,
    echo: Any = print, cases: list[str] | None = None, force: bool = False,
) -> dict[str, Any]:
    """Predict every case of ``source`` with the run's models; returns the summary written to ``summary.json``."""
    card = read_model_card(run_dir)
    card_text = layout.model_card_file(run_dir).read_text()
    row, entry = card_row(card, options.row)
    subjects = resolve_cases(source, cases)
    ids = [f.case_id for f in subjects]
    if len(set(ids)) != len(ids):
        raise DataError(f"{source} lists case id(s) {sorted({i for i in ids if ids.count(i) > 1})} twice")
    rows, metrics = [], []
    for files in subjects:
        facts = _predict_one(card, card_text, run_dir, files, out_dir, options, row, progress, force)
        echo(f"[predict] {files.case_id}: {facts['summary']}")
        rows.append({k: facts[k] for k in ("case", "n_voxels", "defect_fraction", "mean_uncertainty", "seconds")})
        if facts.get("metrics"):
            metrics.append({"case": files.case_id, **facts["metrics"]})
    summary = _summary(card, row, entry, source, rows, metrics)
    _write_csv(layout.predict_summary_file(out_dir, "cases.csv"), rows)
    if metrics:
        _write_csv(layout.predict_summary_file(out_dir, "metrics.csv"), metrics)
    write_json(layout.predict_summary_file(out_dir, "summary.json"), summary)
    return summary


def _predict_one(
    card: dict[str, Any], card_text: str, run_dir: Path, files: Any, out_dir: Path, options: PredictOptions,
    row: str, progress: Any, force: bool,
) -> dict[str, Any]:
    """One case: kept when its facts record the same input key, else predicted and written."""
    key = _input_key(card_text, files, row, options)
    facts_path = layout.predict_output_file(out_dir, files.case_id, "prediction", ".json")
    if not force and facts_path.is_file():
        previous = json.loads(facts_path.read_text())
        extension = "." + options.file_format
        if previous.get("input_key") == key and all(
            layout.predict_output_file(out_dir, files.case_id, kind, extension).is_file() for kind in KINDS
        ):
            return {**previous, "summary": f"kept ({facts_path} is current)"}
    started = time.perf_counter()
    prediction = predict_case(card, run_dir, files, options, progress)
    facts = _write_case(card, files, prediction, out_dir, options, row)
    facts.update(input_key=key, seconds=round(time.perf_counter() - started, 1))
    write_json(facts_path, facts)
    return facts


def _write_case(
    card: dict[str, Any], files: Any, prediction: CasePrediction, out_dir: Path, options: PredictOptions, row: str
) -> dict[str, Any]:
    """The maps in original space, the overview and the case's facts (returned; the caller writes them)."""
    from vent.io.images import image_from_array, read_image
    from vent.predict.maps import original_grid, to_original_space, write_maps
    from vent.report.prediction_figures import prediction_overview_figure

    reference = files.average_image or files.phase_images[0]
    target = original_grid(reference)
    maps = to_original_space(prediction.probability, prediction.uncertainty, prediction.threshold,
                             prediction.coords_zyx, prediction.pre.grid, target)
    extension = "." + options.file_format
    paths = {kind: layout.predict_output_file(out_dir, files.case_id, kind, extension) for kind in KINDS}
    paths[KINDS[0]].parent.mkdir(parents=True, exist_ok=True)
    write_maps(maps, paths)
    fraction = card["settings"]["preprocess"]["ground_truth"]["fraction"]
    metrics = score_case(prediction, fraction) if prediction.labels is not None else None
    notes = list(prediction.warnings)
    if metrics:
        notes.append("against the RefVI: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    overview = layout.predict_output_file(out_dir, files.case_id, "overview", ".png")
    prediction_overview_figure(
        read_image(reference, "reference CT"), {k: image_from_array(getattr(maps, k), target) for k in KINDS},
        prediction.threshold, overview, f"{files.case_id}: {row} ({len(prediction.thresholds)} fold models)", notes,
    )
    return _facts(card, files, prediction, maps, row, paths, overview, metrics)


def _facts(card, files, prediction, maps, row, paths, overview, metrics) -> dict[str, Any]:
    pre = prediction.pre
    lung = maps.lung.astype(bool)
    defect_fraction = float(maps.defect[lung].mean()) if lung.any() else 0.0
    mean_uncertainty = float(prediction.uncertainty.mean()) if len(prediction.uncertainty) else 0.0
    summary = (f"{len(prediction.coords_zyx)} voxels, defect {defect_fraction:.1%} of the lung, mean fold SD "
               f"{mean_uncertainty:.3f}")
    if metrics:
        summary += f"; Dice {metrics['dice']:.3f}, AUC {metrics['auc']:.3f}"
    return {
        "case": files.case_id,
        "row": row,
        "model": card["rows"][row]["model"],
        "folds": [fold["fold"] for fold in card["rows"][row]["folds"]],
        "thresholds": prediction.thresholds,
        "threshold": prediction.threshold,
        "n_voxels": int(len(prediction.coords_zyx)),
        "defect_fraction": round(defect_fraction, 4),
        "mean_uncertainty": round(mean_uncertainty, 4),
        "lung_masks": pre.attrs.get("lung_masks", "given"),
        "phase_order": pre.attrs.get("phase_order"),
        "inhale_phase": pre.attrs.get("inhale_phase"),
        "exhale_phase": pre.attrs.get("exhale_phase"),
        "lung_volume_ml": pre.attrs.get("lung_volume_ml"),
        "modality": files.modality,
        "grid": maps.grid.to_attrs(),
        "inputs": [str(p) for p in files.all_files()],
        "outputs": {**{k: str(v) for k, v in paths.items()}, "overview": str(overview)},
        "warnings": prediction.warnings,
        "metrics": metrics,
        "summary": summary,
    }


def _summary(card, row, entry, source, rows, metrics) -> dict[str, Any]:
    from vent.metrics import summarise

    summary: dict[str, Any] = {
        "run_cohort": card["cohort"]["name"],
        "trained_modality": card["cohort"].get("modality"),
        "row": row,
        "model": entry["model"],
        "source": str(source),
        "cases": [r["case"] for r in rows],
    }
    if metrics:
        names = [k for k in metrics[0] if k != "case"]
        summary["external_validation"] = {"n_cases": len(metrics)}
        for name in names:
            result = summarise([m[name] for m in metrics])
            summary["external_validation"][name] = {"mean": result.mean, "min": result.lo, "max": result.hi,
                                                    "n_nan": result.n_nan}
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
