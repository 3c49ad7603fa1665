"""Report sections per patient: Figs. 4-9-style panels (phases, RefVI, ground truth and every method's binary
prediction on one coronal and one axial slice, the fold that held the patient out named), and the NIfTI volumes for
viewers (``report/volumes/<case>/``: CT at the breathing extremes, lung mask, RefVI, ground truth, and each method's
probability, binary and continuous maps, linked from the train stage's prediction volumes)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from vent.io import layout
from vent.io.artifacts import read_preprocessed_case
from vent.io.atomic import write_text
from vent.io.predictions import prediction_volume, read_prediction
from vent.io.volumes import link_volume, write_volume
from vent.report.patient_figures import MethodSlice, PatientPanels, patient_panel_figure
from vent.report.tables import Table
from vent.stages.report.context import ReportBuild

__all__ = ["patients_section", "volumes_section", "volume_name"]

PREDICTION_KINDS = ("probability", "defect", "ventilation")
"""The prediction volumes of the train stage (``layout.prediction_map_file``) linked into the report."""


def volume_name(row: str) -> str:
    """A row's name as a file-name part: letters, digits, '_' and '-' only (``lstm@paper`` -> ``lstm-paper``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", row)


def _methods(report: ReportBuild, case: str, pre: Any) -> list[MethodSlice]:
    """Every row's binary prediction of ``case`` as a volume (NaN outside the analysed voxels), with its Dice."""
    dice = {(r["model"], r["case"]): r["dice"] for r in report.evaluation.per_patient}
    methods = []
    for row in report.evaluation.rows:
        if case not in row.predictions:
            continue
        prediction = read_prediction(report.run_dir / row.predictions[case])
        volume = prediction_volume(prediction.defect.astype(np.float32), prediction.coords_zyx, pre.grid)
        methods.append(MethodSlice(report.styles[row.row], volume, dice.get((row.row, case))))
    return methods


def _panel_title(report: ReportBuild, case: str) -> str:
    fold = report.held_out_fold.get(case)
    where = "" if fold is None else f": a test patient of fold {fold} (no model saw it while training)"
    return f"{case}{where}"


def patients_section(report: ReportBuild) -> None:
    """One panel figure per patient (the study's Figs. 4-9), every method side by side."""
    doc = report.doc
    doc.heading("Figs. 4-9: every patient, every method")
    doc.paragraph(
        "Per patient, a coronal and an axial slice (the slice through both lungs, at least half the largest lung "
        "cross-section, with the most ground-truth defect voxels): the 4DCT phases (lung window -1000 to 200 HU, "
        "labelled by breathing state), the RefVI, its ground-truth defects, and every method's binary prediction on "
        "the first phase's CT (filled in the method's colour, the ground-truth defects outlined in white; the "
        "frame has the method's colour in every figure). Dice = the patient's Dice of that method."
    )
    report.volume_rows = []
    with report.ctx.progress.task("report (patients and volumes)", total=len(report.cases)) as bar:
        for case in report.cases:
            pre = read_preprocessed_case(layout.case_file(report.run_dir, "preprocess", case))
            panels = PatientPanels(
                case=case, ct_tzyx=pre.ct_tzyx, phase_labels=report.phase_labels, refvi_zyx=pre.refvi_zyx,
                truth_zyx=pre.defect_zyx, lung_zyx=pre.lung_mask_zyx, methods=_methods(report, case, pre),
                title=_panel_title(report, case),
            )
            name = f"patient_{volume_name(case)}.png"
            y, z = patient_panel_figure(panels, report.path(name))
            report.figure(name, f"{_panel_title(report, case)}; coronal slice y = {y}, axial slice z = {z} "
                          "(analysis-grid indices).", f"panels of {case}")
            report.volume_rows += _case_volumes(report, case, pre)  # while the case is in memory: read it once
            bar.advance(1)


def _case_volumes(report: ReportBuild, case: str, pre: Any) -> list[list[str]]:
    """Write one patient's own volumes and link its prediction volumes; returns the index rows."""
    attrs = report.pre_attrs[case]
    lung = pre.lung_mask_zyx > 0
    own = {
        "ct_max_exhale": (np.round(pre.ct_tzyx[int(attrs.get("exhale_phase", 0))]).astype(np.int16),
                          "CT at maximum exhalation (HU)"),
        "ct_max_inhale": (np.round(pre.ct_tzyx[int(attrs.get("inhale_phase", 0))]).astype(np.int16),
                          "CT at maximum inhalation (HU)"),
        "lung_mask": (lung.astype(np.uint8), "analysed lung (1)"),
        "refvi": (np.where(lung, np.nan_to_num(pre.refvi_zyx), 0).astype(np.float32), "RefVI on the analysis grid"),
        "ground_truth": ((pre.defect_zyx > 0).astype(np.uint8), "ground-truth defects (1)"),
    }
    rows = []
    for name, (array, what) in own.items():
        path = write_volume(layout.report_volume_file(report.run_dir, case, name), array, pre.grid)
        rows.append([case, "", what, path.relative_to(layout.stage_dir(report.run_dir, "report")).as_posix()])
    for row in report.evaluation.rows:
        for kind in PREDICTION_KINDS:
            source = layout.prediction_map_file(report.run_dir, row.row, case, kind)
            if case not in row.predictions or not source.exists():
                continue
            target = layout.report_volume_file(report.run_dir, case, f"{volume_name(row.row)}_{kind}")
            link_volume(source, target)
            rows.append([case, row.label, kind, target.relative_to(layout.stage_dir(report.run_dir, "report"))
                         .as_posix()])
    return rows


def volumes_section(report: ReportBuild) -> None:
    """The volumes for viewers, written or linked into ``report/volumes/<case>/`` by ``patients_section``: listed
    in ``volumes.csv`` and in the report."""
    report.doc.heading("Volumes for 3D Slicer and ITK-SNAP")
    rows = report.volume_rows
    table = Table(["case", "method", "content", "file (in report/)"], rows)
    write_text(report.path("volumes.csv"), table.to_csv())
    report.outputs["volumes.csv"] = "index of the NIfTI volumes in volumes/"
    report.outputs["volumes/"] = f"{len(rows)} NIfTI volumes on the analysis grid, one folder per patient"
    report.doc.paragraph(
        f"{len(rows)} NIfTI volumes on each patient's analysis grid (same spacing, origin and direction, so they "
        "overlay), one folder per patient in volumes/ beside this report; the list is volumes.csv. In 3D Slicer or "
        "ITK-SNAP, open <case>_ct_max_exhale.nii.gz, then add <case>_ground_truth.nii.gz or "
        "<case>_<method>_defect.nii.gz as a segmentation (label map) and <case>_<method>_probability.nii.gz or "
        "<case>_refvi.nii.gz as an overlay. Probability and ventilation maps are 0 outside the analysed lung."
    )
    report.doc.table(table, summary=f"The {len(rows)} files")
