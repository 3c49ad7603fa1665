"""Stage ``explain``: temporal saliency of the reference model on held-out voxels, per fold, then pooled.

Reads: the reference model of every fold (``train/<model>/fold_<k>/model.pt``), its test patients' radiomics files.
Writes:

- ``explain/saliency.h5``: per fold the mean normalised (T, N_k) map over the explained voxels (each voxel's map
  sums to 1), the same split by class (defect / healthy), the fold's feature ids and voxel count; and the pooled
  (T, F) maps ``pooled_map`` (every fold, a sequence a fold did not select = 0 there) and
  ``pooled_map_where_selected``, both on the relative scale R_k = T N_k M_k of ``vent.explain.pooling`` (1.0 = a
  uniform share of a fold's cells), NaN for a sequence no fold selected;
- ``explain/importance.csv``: rank, feature_id, importance (mean over phases of ``pooled_map``: voxel-weighted over
  all folds, absent = 0; this column ranks), importance_where_selected (over the folds that selected it), n_folds
  (folds that selected it), n_folds_total; 1.0 = the sequence carries a uniform 1/N_k share of a fold's relevance;
- ``explain/trends.csv``: for every feature selected in any fold: phase, class, mean, sd, n of the raw feature value
  over the sampled held-out voxels (the study's "key sequences in defect vs healthy lung");
- ``explain/summary.json``: the device used, the IG settings and per-fold convergence record (steps used,
  completeness errors), the importance definition, the deletion and randomisation checks, and ``warnings``.

Config: ``explain`` (and ``train.reference_model``, ``train.device``). Voxels explained: a stratified sample per test
patient (``voxels_per_class_per_case``), never every voxel (memory grows with voxels x IG steps x (1 + T + N)).
IG steps start at ``explain.n_steps`` and are doubled per voxel until its completeness error is below
``explain.completeness_tolerance`` or ``explain.max_steps`` is reached (then a warning is logged and recorded).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from vent.errors import ConfigError
from vent.io.artifacts import string_list
from vent.io.atomic import atomic_path, write_json, write_text
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases
from vent.stages.select import load_splits
from vent.stages.train import load_fold_model

__all__ = ["ExplainStage", "resolve_explain_device"]

log = logging.getLogger(__name__)

RANDOMISATION_VOXELS = 64
"""Voxels (evenly spaced over the first fold's sample) explained again with a re-initialised model."""

MAP_NORMALISATION = (
    "each voxel's map divided by its sum over the fold's T x N_k cells, then averaged over the fold's voxels; pooled "
    "maps rescaled by T * N_k (1.0 = a uniform share) before the voxel-weighted mean over folds"
)


@dataclass
class _FoldInputs:
    """What one fold's explanation reads: the model and the sampled held-out voxels."""

    index: int
    model: Any
    spec: dict[str, Any]
    kind: str
    feature_ids: list[str]
    x: np.ndarray  # standardised, (V, T, N_k), float32
    y: np.ndarray  # labels, (V,)
    raw: np.ndarray  # raw feature values, (V, T, N_k)


def resolve_explain_device(setting: str) -> str:
    """The torch device for ``train.device``: "auto" = CUDA if available, else CPU; never a silent fallback.

    Raises:
        ConfigError: ``cuda`` was asked for but CUDA is not available.
    """
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device = {setting!r} but CUDA is not available on this machine, so explain cannot run there; "
            "set train.device to 'auto' (CUDA when present, else CPU) or 'cpu'."
        )
    return setting


def edge_input_ids(channels: list[str]) -> list[str]:
    """Sequence ids of the lung-edge inputs (``train.edge_inputs``), as they appear beside the feature ids."""
    return [f"edge_{channel}" for channel in channels]


def _read_fold(ctx: RunContext, fold: Any, reference: str) -> _FoldInputs:
    """Load a fold's reference model and a stratified sample of its test patients' voxels."""
    from vent.explain import stratified_voxel_sample
    from vent.models.data import Standardiser, read_voxel_inputs

    config = ctx.config.explain
    model, payload = load_fold_model(ctx.stage_dir("train") / reference / f"fold_{fold.index}" / "model.pt")
    standardiser = Standardiser.from_dict(payload["standardiser"])
    positions = payload["feature_positions"]
    kind = payload["input_kind"]
    labels: dict[str, np.ndarray] = {}
    for case in fold.test:
        with h5py.File(ctx.case_file("radiomics", case), "r") as handle:
            labels[case] = handle["labels"][...]
    sample = stratified_voxel_sample(labels, config.voxels_per_class_per_case, seed=config.seed)
    xs, ys, raws = [], [], []
    for case, index in sample.items():
        raw = read_voxel_inputs(ctx.case_file("radiomics", case), index, kind, positions, payload.get("edge_index"))
        raws.append(raw)
        xs.append(np.asarray(standardiser.apply(raw), dtype=np.float32))
        ys.append(labels[case][np.sort(index)])
    return _FoldInputs(
        index=fold.index,
        model=model,
        spec=payload["spec"],
        kind=kind,
        feature_ids=(list(payload["feature_ids"]) if kind == "radiomics" else ["intensity"])
        + edge_input_ids(payload.get("edge_channels") or []),
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        raw=np.concatenate(raws),
    )


def _explain_kwargs(config: Any, device: str) -> dict[str, Any]:
    """explain_sample's settings from the ``explain`` config section (shared by the trained and random models)."""
    return {
        "method": config.method,
        "n_steps": config.n_steps,
        "max_steps": config.max_steps,
        "completeness_tolerance": config.completeness_tolerance,
        "internal_batch_size": config.internal_batch_size,
        "device": device,
    }


def _random_model(spec: dict[str, Any], seed: int) -> Any:
    """The reference architecture with fresh, seeded weights (for the randomisation check)."""
    import torch

    from vent.models import build_model

    torch.manual_seed(seed + 12345)
    return build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])


def _explain_fold(inputs: _FoldInputs, config: Any, device: str, randomise: bool) -> tuple[Any, dict[str, Any]]:
    """Explain one fold's voxels on arrays; returns (ExplainResult with voxel maps, JSON fold summary)."""
    import torch

    from vent.explain import (
        deletion_check,
        explain_sample,
        model_randomisation_check,
        probability_forward,
        relative_map,
    )

    kwargs = _explain_kwargs(config, device)
    result = explain_sample(inputs.model, inputs.x, keep_voxel_maps=True, **kwargs)
    ids, y = inputs.feature_ids, inputs.y
    fold_importance = relative_map(result.mean_map).mean(axis=0)
    summary: dict[str, Any] = {
        "fold": inputs.index,
        "n_voxels": int(len(y)),
        "n_features": len(ids),
        "delta": result.delta,
        "convergence": result.convergence,
        "importance": dict(zip(ids, map(float, fold_importance))),
    }
    warnings = [f"fold {inputs.index}: {message}" for message in result.warnings]
    if len(ids) > 1 and len(np.unique(y)) == 2:
        summary["deletion"] = deletion_check(
            probability_forward(inputs.model),
            torch.as_tensor(inputs.x, device=device),
            y,
            result.importance,
            k=max(1, min(3, len(ids) - 1)),
            n_random=10,
            seed=config.seed,
        )
    if randomise:
        check = model_randomisation_check(
            _random_model(inputs.spec, config.seed), inputs.x, result.voxel_maps, RANDOMISATION_VOXELS, **kwargs
        )
        warnings += [f"fold {inputs.index}, randomised model: {message}" for message in check["warnings"]]
        summary["randomisation"] = check
    summary["warnings"] = warnings
    return result, summary


def _write_fold_maps(store: h5py.File, inputs: _FoldInputs, result: Any) -> None:
    """One fold's mean normalised map, split by class, with its feature ids and voxel count."""
    from vent.explain import normalise_maps

    normalised = normalise_maps(result.voxel_maps)
    group = store.create_group(f"fold_{inputs.index}")
    group.create_dataset("mean_map", data=result.mean_map)
    for label, name in ((1, "defect"), (0, "healthy")):
        if (inputs.y == label).any():
            group.create_dataset(f"mean_map_{name}", data=normalised[inputs.y == label].mean(axis=0))
    group.attrs["feature_ids"] = np.array(inputs.feature_ids, dtype=h5py.string_dtype())
    group.attrs["n_voxels"] = len(inputs.y)
    group.attrs["steps_max_used"] = int(result.steps_per_voxel.max())


def _importance_csv(pooled: Any | None) -> str:
    """importance.csv: the selected sequences ranked by ``importance`` (all folds, absent = 0); header only if
    the reference model has no radiomic sequences."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "feature_id", "importance", "importance_where_selected", "n_folds", "n_folds_total"])
    for rank, j in enumerate(pooled.order if pooled is not None else [], start=1):
        writer.writerow(
            [
                rank,
                pooled.feature_ids[j],
                f"{pooled.importance[j]:.6g}",
                f"{pooled.importance_where_selected[j]:.6g}",
                int(pooled.n_folds[j]),
                pooled.n_folds_total,
            ]
        )
    return buffer.getvalue()


def _trends_csv(trend_values: dict[tuple[str, int], list[np.ndarray]], n_phases: int) -> str:
    """trends.csv: raw value of every selected sequence per phase and class over the sampled held-out voxels."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["feature_id", "phase", "class", "mean", "sd", "n"])
    for (feature_id, label), chunks in sorted(trend_values.items()):
        values = np.concatenate(chunks)
        for t in range(n_phases):
            writer.writerow(
                [
                    feature_id,
                    t,
                    "defect" if label else "healthy",
                    f"{values[:, t].mean():.6g}",
                    f"{values[:, t].std():.6g}",
                    len(values),
                ]
            )
    return buffer.getvalue()


def _summary(ctx: RunContext, device: str, folds: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json: settings, device, per-fold checks and every warning, for the report."""
    from vent.explain import IG_METHOD, IMPORTANCE_DEFINITION

    config = ctx.config.explain
    return {
        "method": config.method,
        "reference_model": ctx.config.train.reference_model,
        "device": {"requested": ctx.config.train.device, "used": device},
        "n_steps": config.n_steps,
        "ig": {
            "integration": IG_METHOD,
            "baseline": 0.0,
            "n_steps_start": config.n_steps,
            "max_steps": config.max_steps,
            "completeness_tolerance": config.completeness_tolerance,
            "completeness_error": "e_v = max over a voxel's IG calls of |sum IG - (f(x) - f(0))|, probability units; "
            "steps doubled per voxel until e_v <= completeness_tolerance or max_steps",
            "n_steps_max_used": max(max(map(int, f["convergence"]["steps_used"])) for f in folds),
            "max_completeness_error": max(f["delta"]["max_abs"] for f in folds),
            "converged": all(f["convergence"]["converged"] for f in folds),
        },
        "map_normalisation": MAP_NORMALISATION,
        "importance_definition": IMPORTANCE_DEFINITION,
        "importance_ranked_by": "importance",
        "folds": folds,
        "warnings": [message for f in folds for message in f["warnings"]],
    }


class ExplainStage(Stage):
    name = "explain"
    needs = ("train",)
    version = "2"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        from vent.explain import FoldMap, pool_fold_maps

        config = ctx.config.explain
        device = resolve_explain_device(ctx.config.train.device)
        cases = sorted(upstream_cases(ctx, "radiomics"))
        folds = load_splits(ctx.run_dir, cases)
        with h5py.File(ctx.case_file("radiomics", cases[0]), "r") as handle:
            all_ids = string_list(handle.attrs["feature_ids"]) + edge_input_ids(ctx.config.train.edge_inputs)
            n_phases = handle["features"].shape[1]
        fold_maps: list[FoldMap] = []
        trend_values: dict[tuple[str, int], list[np.ndarray]] = {}
        fold_summaries = []
        randomised = False
        out = ctx.stage_dir(self.name)
        with (
            atomic_path(out / "saliency.h5") as tmp,
            h5py.File(tmp, "w") as store,
            ctx.progress.task("explain (folds)", total=len(folds)) as bar,
        ):
            for fold in folds:
                inputs = _read_fold(ctx, fold, ctx.config.train.reference_model)
                randomise = not randomised and len(inputs.feature_ids) > 2
                result, summary = _explain_fold(inputs, config, device, randomise)
                randomised |= randomise
                _write_fold_maps(store, inputs, result)
                fold_summaries.append(summary)
                if inputs.kind == "radiomics":
                    fold_maps.append(FoldMap(inputs.feature_ids, result.mean_map, len(inputs.y)))
                    for j, feature_id in enumerate(inputs.feature_ids):
                        for label in (0, 1):
                            chunk = inputs.raw[inputs.y == label, :, j]
                            trend_values.setdefault((feature_id, label), []).append(chunk)
                bar.advance(1)
            pooled = pool_fold_maps(fold_maps, all_ids) if fold_maps else None
            empty = np.full((n_phases, len(all_ids)), np.nan)
            store.create_dataset("pooled_map", data=pooled.pooled_map if pooled else empty)
            store.create_dataset(
                "pooled_map_where_selected", data=pooled.pooled_map_where_selected if pooled else empty
            )
            store.attrs["feature_ids"] = np.array(all_ids, dtype=h5py.string_dtype())
            store.attrs["method"] = config.method
            store.attrs["normalisation"] = MAP_NORMALISATION

        write_text(out / "importance.csv", _importance_csv(pooled))
        write_text(out / "trends.csv", _trends_csv(trend_values, n_phases))
        summary = _summary(ctx, device, fold_summaries)
        write_json(out / "summary.json", summary)
        if summary["warnings"]:
            ctx.echo(f"[explain] {len(summary['warnings'])} warning(s), recorded in explain/summary.json")
        if pooled is not None and pooled.order:
            top = ", ".join(all_ids[j] for j in pooled.order[:3])
            ctx.echo(f"[explain] most important sequences: {top}")
        return {
            "saliency.h5": "saliency maps",
            "importance.csv": "importance per sequence",
            "trends.csv": "key sequences in defect vs healthy",
            "summary.json": "IG checks",
        }
