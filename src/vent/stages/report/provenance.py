"""Report section on the run's provenance: the effective config, the versions, each stage's timing, the excluded
subjects, the empty-kernel policy counts and the ground-truth definition (read from the stages' manifests)."""

from __future__ import annotations

import json

import yaml

from vent.io import layout
from vent.runner import read_manifest
from vent.stages.report.cohort import empty_kernel_counts, ground_truth_definition
from vent.stages.report.context import ReportBuild

__all__ = ["provenance_section", "STAGE_ORDER"]

STAGE_ORDER = ("preprocess", "radiomics", "split", "select", "train", "evaluate", "explain")
"""The stages before the report, in pipeline order (the report's own time is in its manifest)."""


def _timings(report: ReportBuild) -> tuple[list[list[str]], dict]:
    """Per stage: when it last ran, its wall time and what it used; and the newest manifest's provenance."""
    rows, newest = [], {}
    for stage in STAGE_ORDER:
        if stage in report.unused:
            rows.append([stage, "not used", "", report.unused[stage]])
            continue
        manifest = read_manifest(layout.stage_dir(report.run_dir, stage)) or {}
        provenance = manifest.get("provenance", {})
        if provenance:
            newest = provenance
        seconds = provenance.get("seconds")
        rows.append([stage, provenance.get("started", "never finished")[:19].replace("T", " "),
                     "" if seconds is None else f"{seconds:.1f}", provenance.get("config_file") or ""])
    return rows, newest


def _empty_kernel_totals(report: ReportBuild) -> str:
    if "radiomics" in report.unused:
        return "Empty-kernel policy: radiomics not used."
    totals: dict[str, int] = {}
    for case in report.cases:
        # per-phase lists and counts; the policy's name is not a count
        for key, value in empty_kernel_counts(report, case).items():
            if isinstance(value, (list, int)) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + (sum(value) if isinstance(value, list) else value)
    counted = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in sorted(totals.items())) or "none"
    return f"Empty-kernel policy radiomics.empty_kernel = '{report.config.radiomics.empty_kernel}': {counted}."


def provenance_section(report: ReportBuild) -> None:
    """Versions, timings per stage, exclusions, empty-kernel counts, the ground-truth definition and the config."""
    doc = report.doc
    doc.heading("Provenance")
    rows, newest = _timings(report)
    versions = newest.get("versions", {})
    doc.paragraph(
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
        + f". Host {newest.get('host', 'n/a')}, {newest.get('platform', 'n/a')}. Every number in this report is read "
        f"from this run's artifacts in {report.run_dir}; `vent report CONFIG` rebuilds it from them alone."
    )
    doc.paragraph("Wall time per stage (seconds; each stage's manifest):")
    doc.table(["stage", "last run (UTC)", "seconds", "config file"], rows)
    excluded = dict(report.config.data.exclude)
    doc.bullets([
        "Excluded subjects: " + ("; ".join(f"{c} ({r})" for c, r in excluded.items()) if excluded else "none") + ".",
        _empty_kernel_totals(report),
        ground_truth_definition(report.config),
        f"Config: {report.config.source} (the effective values, defaults included, below).",
    ])
    effective = json.loads(report.config.model_dump_json())
    doc.code(yaml.safe_dump(effective, sort_keys=False), summary="The effective config")
