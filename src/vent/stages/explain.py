"""Stage ``explain``: temporal saliency of the reference model on held-out voxels, per fold, then pooled.

Reads: the reference model of every fold (``train/<model>/fold_<k>/model.pt``), its test patients' radiomics files.
Writes:

- ``explain/saliency.h5``: per fold the mean normalised (T, N) map over the explained voxels, the same split by
  class (defect / healthy), the fold's feature ids; and the pooled (T, F) map over all folds (a feature absent from
  a fold's selection does not count in that fold's average);
- ``explain/importance.csv``: feature_id, importance (mean over phases and voxels of the normalised maps, pooled over
  folds weighted by voxels), n_folds (folds whose selection holds the feature), rank;
- ``explain/trends.csv``: for every feature selected in any fold: phase, class, mean, sd, n of the raw feature value
  over the sampled held-out voxels (the study's "key sequences in defect vs healthy lung");
- ``explain/summary.json``: method, IG steps and completeness errors, deletion check per fold.

Config: ``explain``. Voxels explained: a stratified sample per test patient (``voxels_per_class_per_case``), never
every voxel (memory grows with voxels x IG steps x (1 + T + N)).
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

import h5py
import numpy as np

from vent.io.artifacts import string_list
from vent.io.atomic import atomic_path, write_json, write_text
from vent.runner import RunContext, StagePlan
from vent.stages.base import Stage, upstream_cases
from vent.stages.select import load_splits
from vent.stages.train import load_fold_model

__all__ = ["ExplainStage"]

log = logging.getLogger(__name__)


def _read_rows(path: Any, dataset: str, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` (sorted) of a dataset, read in one pass."""
    with h5py.File(path, "r") as handle:
        return handle[dataset][np.sort(index)]


def _randomisation_check(model: Any, x: np.ndarray, trained_map: np.ndarray, config: Any, device: str) -> dict:
    """Model randomisation (Adebayo et al. 2018): the same voxels explained by a freshly initialised model.

    A saliency method that reflects what the model learned must give a clearly different map; we report the
    Spearman rank correlation between the trained and the random model's averaged (T, N) maps (near 1 = the map
    only reflects the input, not the model).
    """
    import torch
    from scipy import stats

    from vent.explain import explain_sample
    from vent.models import build_model

    spec = model.spec
    torch.manual_seed(config.seed + 12345)
    random_model = build_model(spec["name"], spec["n_inputs"], spec["n_steps"], **spec["params"])
    subset = x[: min(len(x), 64)]
    random_result = explain_sample(
        random_model,
        subset,
        method=config.method,
        n_steps=config.n_steps,
        internal_batch_size=config.internal_batch_size,
        device=device,
    )
    rho = stats.spearmanr(trained_map.ravel(), random_result.mean_map.ravel()).statistic
    return {"spearman_trained_vs_random_map": float(rho), "n_voxels": int(len(subset))}


class ExplainStage(Stage):
    name = "explain"
    needs = ("train",)
    version = "1"

    def run(self, ctx: RunContext, plan: StagePlan) -> dict[str, Any]:
        import torch

        from vent.explain import (
            deletion_check,
            explain_sample,
            normalise_maps,
            probability_forward,
            stratified_voxel_sample,
        )
        from vent.models.data import Standardiser

        config = ctx.config.explain
        reference = ctx.config.train.reference_model
        cases = sorted(upstream_cases(ctx, "radiomics"))
        folds = load_splits(ctx.run_dir, cases)
        with h5py.File(ctx.case_file("radiomics", cases[0]), "r") as handle:
            all_ids = string_list(handle.attrs["feature_ids"])
            n_phases = handle["features"].shape[1]
        pooled_sum = np.zeros((n_phases, len(all_ids)))
        pooled_count = np.zeros(len(all_ids))
        trend_values: dict[tuple[str, int], list[np.ndarray]] = {}
        fold_summaries = []
        out = ctx.stage_dir(self.name)
        device = "cuda" if torch.cuda.is_available() and ctx.config.train.device != "cpu" else "cpu"
        with (
            atomic_path(out / "saliency.h5") as tmp,
            h5py.File(tmp, "w") as store,
            ctx.progress.task("explain (folds)", total=len(folds)) as bar,
        ):
            for fold in folds:
                model, payload = load_fold_model(ctx.stage_dir("train") / reference / f"fold_{fold.index}" / "model.pt")
                standardiser = Standardiser.from_dict(payload["standardiser"])
                positions = payload["feature_positions"]
                kind = payload["input_kind"]
                ids = payload["feature_ids"] if kind == "radiomics" else ["intensity"]
                labels: dict[str, np.ndarray] = {}
                for case in fold.test:
                    with h5py.File(ctx.case_file("radiomics", case), "r") as handle:
                        labels[case] = handle["labels"][...]
                sample = stratified_voxel_sample(labels, config.voxels_per_class_per_case, seed=config.seed)
                xs, ys, raws = [], [], []
                for case, index in sample.items():
                    if kind == "radiomics":
                        raw = _read_rows(ctx.case_file("radiomics", case), "features", index)[:, :, positions]
                    else:
                        raw = _read_rows(ctx.case_file("radiomics", case), "intensity", index)[:, :, None]
                    raws.append(raw)
                    xs.append(np.asarray(standardiser.apply(raw), dtype=np.float32))
                    ys.append(labels[case][np.sort(index)])
                x, y, raw_all = np.concatenate(xs), np.concatenate(ys), np.concatenate(raws)
                result = explain_sample(
                    model,
                    x,
                    method=config.method,
                    n_steps=config.n_steps,
                    internal_batch_size=config.internal_batch_size,
                    device=device,
                    keep_voxel_maps=True,
                )
                normalised = normalise_maps(result.voxel_maps)
                group = store.create_group(f"fold_{fold.index}")
                group.create_dataset("mean_map", data=result.mean_map)
                for label, name in ((1, "defect"), (0, "healthy")):
                    if (y == label).any():
                        group.create_dataset(f"mean_map_{name}", data=normalised[y == label].mean(axis=0))
                group.attrs["feature_ids"] = np.array(ids, dtype=h5py.string_dtype())
                group.attrs["n_voxels"] = len(y)
                fold_summary: dict[str, Any] = {
                    "fold": fold.index,
                    "n_voxels": int(len(y)),
                    "delta": result.delta,
                    "importance": dict(zip(ids, map(float, result.importance))),
                }
                if len(ids) > 1 and len(np.unique(y)) == 2:
                    fold_summary["deletion"] = deletion_check(
                        probability_forward(model),
                        torch.as_tensor(x),
                        y,
                        result.importance,
                        k=max(1, min(3, len(ids) - 1)),
                        n_random=10,
                        seed=config.seed,
                    )
                if fold.index == folds[0].index and len(ids) > 2:
                    fold_summary["randomisation"] = _randomisation_check(model, x, result.mean_map, config, device)
                fold_summaries.append(fold_summary)
                if kind == "radiomics":
                    for j, feature_id in enumerate(ids):
                        column = all_ids.index(feature_id)
                        pooled_sum[:, column] += result.mean_map[:, j] * len(y)
                        pooled_count[column] += len(y)
                        for label in (0, 1):
                            trend_values.setdefault((feature_id, label), []).append(raw_all[y == label, :, j])
                bar.advance(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                pooled = pooled_sum / pooled_count[None, :]
            store.create_dataset("pooled_map", data=pooled)
            store.attrs["feature_ids"] = np.array(all_ids, dtype=h5py.string_dtype())
            store.attrs["method"] = config.method
            store.attrs["normalisation"] = "each voxel's map divided by its sum, then averaged"

        present = pooled_count > 0
        importance = np.full(len(all_ids), np.nan)
        importance[present] = pooled[:, present].mean(axis=0)
        order = [i for i in np.argsort(-np.nan_to_num(importance, nan=-1.0)) if present[i]]
        n_folds_with = {fid: sum(fid in s["importance"] for s in fold_summaries) for fid in all_ids}
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["rank", "feature_id", "importance", "n_folds"])
        for rank, i in enumerate(order, start=1):
            writer.writerow([rank, all_ids[i], f"{importance[i]:.6g}", n_folds_with[all_ids[i]]])
        write_text(out / "importance.csv", buffer.getvalue())

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
        write_text(out / "trends.csv", buffer.getvalue())
        write_json(
            out / "summary.json",
            {"method": config.method, "n_steps": config.n_steps, "reference_model": reference, "folds": fold_summaries},
        )
        if order:
            top = ", ".join(all_ids[i] for i in order[:3])
            ctx.echo(f"[explain] most important sequences: {top}")
        return {
            "saliency.h5": "saliency maps",
            "importance.csv": "importance per sequence",
            "trends.csv": "key sequences in defect vs healthy",
            "summary.json": "IG checks",
        }
