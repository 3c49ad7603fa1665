"""Stage ``explain``: temporal saliency of the reference model on held-out voxels, per fold, then pooled.

Reads: the reference model of every fold (``train/<model>/fold_<k>/model.pt``), its test patients' radiomics files.
Writes:

- ``explain/saliency.h5`` (layout in ``vent.io.saliency``): per fold the mean normalised (T, N_k) map over the
  explained voxels (each voxel's map sums to 1), the same split by class (defect / healthy), the fold's feature ids
  and voxel counts (all, per class); and the pooled (T, F) maps ``pooled_map`` (every fold, a sequence a fold did
  not select = 0 there), ``pooled_map_where_selected``, and per class ``pooled_map_defect`` / ``pooled_map_healthy``
  (as ``pooled_map``, from each fold's class map weighted by its voxels of that class; all NaN if no fold has that
  class), all on the relative scale R_k = T N_k M_k of ``vent.explain.pooling`` (1.0 = a uniform share of a fold's
  cells), NaN for a sequence no fold selected;
- ``explain/importance.csv``: rank, feature_id, importance (mean over phases of ``pooled_map``: voxel-weighted over
  all folds, absent = 0; this column ranks), importance_where_selected (over the folds that selected it), n_folds
  (folds that selected it), n_folds_total; 1.0 = the sequence carries a uniform 1/N_k share of a fold's relevance;
- ``explain/trends.csv``: the raw value of every sequence selected in any fold, per patient: feature_id, phase,
  class (defect / healthy), case, mean, sd (ddof 0), n over that patient's sampled held-out voxels of that class
  (a patient appears for the sequences its test fold selected);
- ``explain/trend_bands.csv``: the same over patients (``vent.explain.trends``; the study's "key sequences in
  defect vs healthy lung", Fig. 13): feature_id, phase, class, n_patients, mean (mean of the patient means),
  ci_low, ci_high (95% Student-t interval over patients; NaN with one patient), sd_patients (SD of the patient
  means, ddof 1), sd_voxels (SD over all sampled voxels pooled, ddof 0), n_voxels;
- ``explain/summary.json``: the device used, the IG settings and per-fold convergence record (steps used,
  completeness errors), the importance definition, per fold the deletion check (k = min(3, N_k - 1)), the deletion
  curve (``deletion_curve``: AUC after removing the top-k or k random sequences, k = 0 .. N_k - 1, at most
  ``DELETION_CURVE_POINTS`` values) and the randomisation check, the trend band definition, and ``warnings``.

Config: ``explain`` (and ``train.reference_model``; ``execution.device`` and ``execution.explain_batch_size``).
Voxels explained: a stratified sample per test patient (``voxels_per_class_per_case``), never every voxel (memory
grows with voxels x IG steps x (1 + T + N)).
IG steps start at ``explain.n_steps`` and are doubled per voxel until its completeness error is below
``explain.completeness_tolerance`` or ``explain.max_steps`` is reached (then a warning is logged and recorded).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from vent.io import layout
from vent.io.artifacts import open_radiomics_case
from vent.io.atomic import write_json, write_text
from vent.io.saliency import SALIENCY_CLASSES, SaliencyStore, saliency_store
from vent.models.registry import get_spec
from vent.models.sequence import ModelInputs, load_fold_model
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases
from vent.stages.split import read_splits

__all__ = ["ExplainStage", "resolve_explain_device"]

log = logging.getLogger(__name__)

RANDOMISATION_VOXELS = 64
"""Voxels (evenly spaced over the first fold's sample) explained again with a re-initialised model."""

DELETION_CURVE_POINTS = 12
"""Most k values of a fold's deletion curve (evenly spaced over 0 .. N_k - 1, both ends kept)."""

DELETION_RANDOM = 10
"""Random subsets (orderings) per k of the deletion check and curve."""

TREND_BAND_LEVEL = 0.95
"""Coverage of the confidence band over patients in trend_bands.csv."""

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
    cases: np.ndarray  # case id of each voxel, (V,), str


def resolve_explain_device(setting: str) -> str:
    """The torch device for ``execution.device``: "auto" = CUDA if available, else CPU; never a silent fallback.

    The same resolution as training (``vent.models.training.resolve_device``), as a string for captum and torch.

    Raises:
        ConfigError: ``cuda`` was asked for but CUDA is not available.
    """
    from vent.models.training import resolve_device

    return str(resolve_device(setting))


def edge_input_ids(channels: list[str]) -> list[str]:
    """Sequence ids of the lung-edge inputs (``train.edge_inputs``), as they appear beside the feature ids."""
    return [f"edge_{channel}" for channel in channels]


def _read_fold(ctx: RunContext, fold: Any, reference: str) -> _FoldInputs:
    """Load a fold's reference model and a stratified sample of its test patients' voxels."""
    from vent.explain import stratified_voxel_sample
    from vent.models.data import read_voxel_inputs

    config = ctx.config.explain
    model, payload = load_fold_model(layout.model_file(ctx.run_dir, reference, fold.index))
    inputs = ModelInputs.from_payload(payload)
    files = {case: ctx.case_file("radiomics", case) for case in fold.test}
    labels = {case: open_radiomics_case(path).labels() for case, path in files.items()}
    sample = stratified_voxel_sample(labels, config.voxels_per_class_per_case, seed=config.seed)
    xs, ys, raws, cases = [], [], [], []
    for case, index in sample.items():
        raw = read_voxel_inputs(files[case], index, inputs.kind, inputs.positions, inputs.edge_index)
        raws.append(raw)
        xs.append(np.asarray(inputs.standardiser.apply(raw), dtype=np.float32))
        ys.append(labels[case][np.sort(index)])
        cases.append(np.full(len(index), case, dtype=object))
    return _FoldInputs(
        index=fold.index,
        model=model,
        spec=payload["spec"],
        kind=inputs.kind,
        feature_ids=(inputs.feature_ids if inputs.kind == "radiomics" else ["intensity"])
        + edge_input_ids(inputs.edge_channels),
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        raw=np.concatenate(raws),
        cases=np.concatenate(cases).astype(str),
    )


def _explain_kwargs(config: Any, device: str, batch_size: int) -> dict[str, Any]:
    """explain_sample's settings from the ``explain`` config section (shared by the trained and random models)."""
    return {
        "method": config.method,
        "n_steps": config.n_steps,
        "max_steps": config.max_steps,
        "completeness_tolerance": config.completeness_tolerance,
        "internal_batch_size": batch_size,
        "device": device,
    }


def _random_model(spec: dict[str, Any], seed: int) -> Any:
    """The reference architecture with fresh, seeded weights (for the randomisation check)."""
    import torch

    from vent.models import build_model

    torch.manual_seed(seed + 12345)
    return build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])


def _explain_fold(
    inputs: _FoldInputs, config: Any, device: str, batch_size: int, randomise: bool
) -> tuple[Any, dict[str, Any]]:
    """Explain one fold's voxels on arrays; returns (ExplainResult with voxel maps, JSON fold summary)."""
    from vent.explain import explain_sample, model_randomisation_check, relative_map

    kwargs = _explain_kwargs(config, device, batch_size)
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
        summary.update(_deletion(inputs, result.importance, device, config.seed))
    if randomise:
        check = model_randomisation_check(
            _random_model(inputs.spec, config.seed), inputs.x, result.voxel_maps, RANDOMISATION_VOXELS, **kwargs
        )
        warnings += [f"fold {inputs.index}, randomised model: {message}" for message in check["warnings"]]
        summary["randomisation"] = check
    summary["warnings"] = warnings
    return result, summary


def _deletion(inputs: _FoldInputs, importance: np.ndarray, device: str, seed: int) -> dict[str, Any]:
    """The fold's deletion check (one k) and deletion curve (k = 0 .. N_k - 1), with the sequence ids of the ranking."""
    import torch

    from vent.explain import deletion_check, deletion_curve, deletion_ks, probability_forward

    forward, x = probability_forward(inputs.model), torch.as_tensor(inputs.x, device=device)
    n_sequences = len(inputs.feature_ids)
    check = deletion_check(forward, x, inputs.y, importance, k=max(1, min(3, n_sequences - 1)),
                           n_random=DELETION_RANDOM, seed=seed)
    curve = deletion_curve(forward, x, inputs.y, importance, deletion_ks(n_sequences, DELETION_CURVE_POINTS),
                           n_random=DELETION_RANDOM, seed=seed)
    curve["top_order_ids"] = [inputs.feature_ids[j] for j in curve["top_order"]]
    return {"deletion": check, "deletion_curve": curve}


def _class_maps(inputs: _FoldInputs, result: Any) -> dict[str, tuple[np.ndarray, int]]:
    """The fold's mean normalised map over its voxels of each class it has, with that class's voxel count."""
    from vent.explain import normalise_maps

    normalised = normalise_maps(result.voxel_maps)
    return {
        name: (normalised[inputs.y == label].mean(axis=0), int((inputs.y == label).sum()))
        for label, name in enumerate(SALIENCY_CLASSES)
        if (inputs.y == label).any()
    }


def _write_fold_maps(
    store: SaliencyStore, inputs: _FoldInputs, result: Any, class_maps: dict[str, tuple[np.ndarray, int]]
) -> None:
    """One fold's mean normalised map, split by class, with its feature ids and voxel count."""
    store.add_fold(inputs.index, result.mean_map, class_maps, inputs.feature_ids, len(inputs.y),
                   int(result.steps_per_voxel.max()))


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


def _trend_summaries(trend_values: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]]) -> dict[Any, Any]:
    """Per (feature_id, label): the sequence's per-patient means and band over patients (``summarise_trend``)."""
    from vent.explain import summarise_trend

    return {
        key: summarise_trend(
            np.concatenate([values for values, _ in chunks]),
            np.concatenate([cases for _, cases in chunks]),
            level=TREND_BAND_LEVEL,
        )
        for key, chunks in sorted(trend_values.items())
    }


def _trends_csv(summaries: dict[tuple[str, int], Any]) -> str:
    """trends.csv: raw value of every selected sequence per phase, class and patient over its sampled voxels."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["feature_id", "phase", "class", "case", "mean", "sd", "n"])
    for (feature_id, label), trend in summaries.items():
        for p, case in enumerate(trend.cases):
            for t in range(trend.case_mean.shape[1]):
                writer.writerow([feature_id, t, SALIENCY_CLASSES[label], case, f"{trend.case_mean[p, t]:.6g}",
                                 f"{trend.case_sd[p, t]:.6g}", int(trend.case_n[p])])
    return buffer.getvalue()


def _trend_bands_csv(summaries: dict[tuple[str, int], Any]) -> str:
    """trend_bands.csv: per sequence, phase and class the mean over patients with its confidence band."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["feature_id", "phase", "class", "n_patients", "mean", "ci_low", "ci_high", "sd_patients",
                     "sd_voxels", "n_voxels"])
    for (feature_id, label), trend in summaries.items():
        for t in range(len(trend.mean)):
            values = (trend.mean[t], trend.ci_low[t], trend.ci_high[t], trend.sd_patients[t], trend.sd_voxels[t])
            writer.writerow([feature_id, t, SALIENCY_CLASSES[label], len(trend.cases),
                             *(f"{v:.6g}" for v in values), trend.n_voxels])
    return buffer.getvalue()


def _summary(ctx: RunContext, device: str, folds: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json: settings, device, per-fold checks and every warning, for the report."""
    from vent.explain import DELETION_CURVE_DEFINITION, IG_METHOD, IMPORTANCE_DEFINITION, TREND_BAND_DEFINITION

    config = ctx.config.explain
    return {
        "method": config.method,
        "reference_model": ctx.config.train.reference_model,
        "device": {"requested": ctx.config.execution.device, "used": device},
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
        "deletion_curve_definition": DELETION_CURVE_DEFINITION,
        "trend_bands": {"level": TREND_BAND_LEVEL, "definition": TREND_BAND_DEFINITION},
        "folds": folds,
        "warnings": [message for f in folds for message in f["warnings"]],
    }


@dataclass
class _Collected:
    """What the folds' explanations add up to: the pooled inputs (all voxels, and per class), trend values (raw
    values and case ids per (feature_id, label)) and per-fold summaries."""

    fold_maps: list[Any]
    class_fold_maps: dict[str, list[Any]]
    trend_values: dict[tuple[str, int], list[tuple[np.ndarray, np.ndarray]]]
    summaries: list[dict[str, Any]]


def _collect(
    inputs: _FoldInputs, result: Any, class_maps: dict[str, tuple[np.ndarray, int]], collected: _Collected
) -> None:
    """Add one radiomic fold's mean maps (all voxels, per class) and raw sequence values to the pooled figures."""
    from vent.explain import FoldMap

    collected.fold_maps.append(FoldMap(inputs.feature_ids, result.mean_map, len(inputs.y)))
    for name, (mean_map, n_voxels) in class_maps.items():
        collected.class_fold_maps.setdefault(name, []).append(FoldMap(inputs.feature_ids, mean_map, n_voxels))
    for j, feature_id in enumerate(inputs.feature_ids):
        for label in (0, 1):
            chosen = inputs.y == label
            if chosen.any():
                collected.trend_values.setdefault((feature_id, label), []).append(
                    (inputs.raw[chosen, :, j], inputs.cases[chosen])
                )


def _write_pooled(
    store: SaliencyStore, pooled: Any | None, collected: _Collected, all_ids: list[str], n_phases: int, method: str
) -> None:
    """The pooled maps over folds, all voxels and per class (NaN when the reference model has no radiomic sequences
    or, per class, when no fold has voxels of that class)."""
    from vent.explain import pool_fold_maps

    empty = np.full((n_phases, len(all_ids)), np.nan)
    class_maps = {
        name: pool_fold_maps(collected.class_fold_maps[name], all_ids).pooled_map
        if collected.class_fold_maps.get(name) else empty
        for name in SALIENCY_CLASSES
    }
    store.set_pooled(pooled.pooled_map if pooled else empty,
                     pooled.pooled_map_where_selected if pooled else empty, class_maps, all_ids, method,
                     MAP_NORMALISATION)


class ExplainStage(Stage):
    name = "explain"
    needs = ("train",)
    version = "4"

    def unused_reason(self, config: Any) -> str | None:
        spec = get_spec(config.train.reference_model)
        if spec.explainable:
            return None
        return f"train.reference_model {spec.name!r} ({spec.family}) has no temporal saliency to explain"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        from vent.explain import pool_fold_maps

        config = ctx.config.explain
        device = resolve_explain_device(ctx.config.execution.device)
        cases = sorted(upstream_cases(ctx, "radiomics"))
        folds = read_splits(ctx.run_dir, cases)
        first = open_radiomics_case(ctx.case_file("radiomics", cases[0]))
        all_ids = first.feature_ids + edge_input_ids(ctx.config.train.edge_inputs)
        collected = _Collected([], {}, {}, [])
        with (
            saliency_store(layout.explain_file(ctx.run_dir, "saliency.h5")) as store,
            ctx.progress.task("explain (folds)", total=len(folds)) as bar,
        ):
            for fold in folds:
                self._explain_one(ctx, fold, device, store, collected)
                bar.advance(1)
            pooled = pool_fold_maps(collected.fold_maps, all_ids) if collected.fold_maps else None
            _write_pooled(store, pooled, collected, all_ids, first.n_phases, config.method)
        write_text(layout.explain_file(ctx.run_dir, "importance.csv"), _importance_csv(pooled))
        trends = _trend_summaries(collected.trend_values)
        write_text(layout.explain_file(ctx.run_dir, "trends.csv"), _trends_csv(trends))
        write_text(layout.explain_file(ctx.run_dir, "trend_bands.csv"), _trend_bands_csv(trends))
        summary = _summary(ctx, device, collected.summaries)
        write_json(layout.explain_file(ctx.run_dir, "summary.json"), summary)
        if summary["warnings"]:
            ctx.echo(f"[explain] {len(summary['warnings'])} warning(s), recorded in explain/summary.json")
        if pooled is not None and pooled.order:
            ctx.echo(f"[explain] most important sequences: {', '.join(all_ids[j] for j in pooled.order[:3])}")
        return {
            "saliency.h5": "saliency maps",
            "importance.csv": "importance per sequence",
            "trends.csv": "key sequences in defect vs healthy, per patient",
            "trend_bands.csv": "key sequences in defect vs healthy: mean over patients with 95% t-interval",
            "summary.json": "IG checks",
        }

    def _explain_one(
        self, ctx: RunContext, fold: Any, device: str, store: SaliencyStore, collected: _Collected
    ) -> None:
        """Explain one fold's reference model; the randomisation check runs on the first fold with > 2 sequences."""
        inputs = _read_fold(ctx, fold, ctx.config.train.reference_model)
        randomised = any("randomisation" in s for s in collected.summaries)
        randomise = not randomised and len(inputs.feature_ids) > 2
        batch_size = ctx.config.execution.explain_batch_size
        result, summary = _explain_fold(inputs, ctx.config.explain, device, batch_size, randomise)
        class_maps = _class_maps(inputs, result)
        _write_fold_maps(store, inputs, result, class_maps)
        collected.summaries.append(summary)
        if inputs.kind == "radiomics":
            _collect(inputs, result, class_maps, collected)
