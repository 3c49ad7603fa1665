"""select_features on small synthetic radiomics files laid out as the radiomics stage writes them."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import spearmanr

from vent.errors import ConfigError, DataError
from vent.io.artifacts import write_radiomics_case
from vent.selection import select_features

N_PHASES = 4
FEATURE_IDS = [f"feat_{i:02d}" for i in range(10)]
PLANTED_REPRESENTATIVE = "feat_01"  # the least noisy copy of the label-driving factor


def _write_case(path: Path, seed: int, n_voxels: int = 3000, invert_labels: bool = False) -> dict:
    """A case whose features come from 3 latent factors; factor A drives the defect label."""
    rng = np.random.default_rng(seed)
    a, b, c = (rng.normal(size=(n_voxels, N_PHASES)) for _ in range(3))
    noise = lambda scale: scale * rng.normal(size=(n_voxels, N_PHASES))  # noqa: E731
    columns = [
        a + noise(0.08), a + noise(0.02), -a + noise(0.12),  # cluster A (feat_01 best associated)
        b + noise(0.05), b + noise(0.05),  # cluster B
        c + noise(0.05), c + noise(0.05), c + noise(0.05),  # cluster C
        rng.normal(size=(n_voxels, N_PHASES)),  # independent
        np.full((n_voxels, N_PHASES), 2.5),  # constant: must be reported and excluded
    ]
    features = np.stack(columns, axis=-1).astype(np.float32)
    labels = (a.mean(axis=1) + 0.1 * rng.normal(size=n_voxels) > 0.5).astype(np.uint8)
    if invert_labels:
        labels = 1 - labels
    write_radiomics_case(path, features, labels, feature_ids=list(FEATURE_IDS), refvi=a.mean(axis=1).astype(np.float32),
                         chunk_rows=512)
    return {"features": features, "labels": labels}


@pytest.fixture()
def cohort(tmp_path: Path) -> tuple[list[Path], list[dict], Path]:
    radiomics = tmp_path / "radiomics"
    radiomics.mkdir()
    files, data = [], []
    for k, n in enumerate([3000, 2500, 1700]):
        path = radiomics / f"case{k}.h5"
        data.append(_write_case(path, seed=k, n_voxels=n))
        files.append(path)
    # A patient not given to selection (e.g. a test patient of the fold): must never be read.
    poisoned = radiomics / "case_poison.h5"
    _write_case(poisoned, seed=99, invert_labels=True)
    return files, data, poisoned


def test_selects_planted_representative_and_excludes_constant(cohort):
    files, data, _ = cohort
    result = select_features(files, max_voxels_per_case=100000)
    assert PLANTED_REPRESENTATIVE in result.selected
    assert result.constant_features == ["feat_09"]
    assert "feat_09" not in result.selected
    assert sorted(result.clusters().values()) == sorted(
        [["feat_00", "feat_01", "feat_02"], ["feat_03", "feat_04"], ["feat_05", "feat_06", "feat_07"], ["feat_08"]]
    )
    assert len(result.selected) == 4
    assert result.selected == sorted(result.selected, key=FEATURE_IDS.index)

    # Against outside references on the pooled data.
    pooled = np.concatenate([d["features"] for d in data]).astype(np.float64)
    labels = np.concatenate([d["labels"] for d in data])
    for phase in range(N_PHASES):
        reference = np.corrcoef(pooled[:, phase, :9], rowvar=False)
        np.testing.assert_allclose(result.correlation_per_phase[phase, :9, :9], reference, atol=1e-10)
    expected_rho = np.mean([abs(spearmanr(pooled[:, t, 1], labels)[0]) for t in range(N_PHASES)])
    np.testing.assert_allclose(result.spearman[1], expected_rho, atol=1e-12)
    assert result.n_voxels == result.n_sampled == len(labels)
    assert not np.isnan(result.correlation).any()

    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["selected"] == result.selected and summary["cases"] == ["case0.h5", "case1.h5", "case2.h5"]
    assert summary["singleton_silhouette"] == result.singleton == "one"
    assert set(summary["by_convention"]) == {"zero", "one", "exclude"}
    assert summary["by_convention"]["one"]["selected"] and summary["by_convention"]["one"]["cutoff"] == result.cutoff
    assert summary["silhouette_by_convention"]["one"] == pytest.approx(result.silhouette)
    assert summary["guard"]["min_clusters"] == 3 and summary["guard"]["max_clusters"] == 6  # 0.25 and 0.75 of 9
    assert all(set(p) >= {"cutoff", "n_clusters", "silhouette", "silhouette_by_convention", "eligible"}
               for p in summary["sweep"])


def test_opens_only_the_files_it_was_given(cohort, monkeypatch):
    files, _, poisoned = cohort
    opened: list[Path] = []
    real_file = h5py.File

    def recording_file(name, *args, **kwargs):
        opened.append(Path(name).resolve())
        return real_file(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", recording_file)
    result = select_features(files[:2], max_voxels_per_case=500, seed=3)
    assert opened and set(opened) == {f.resolve() for f in files[:2]}
    assert poisoned.resolve() not in opened
    assert result.cases == ["case0.h5", "case1.h5"]
    assert result.n_sampled == 1000


def test_sampling_is_independent_of_the_other_patients(cohort):
    files, _, _ = cohort
    alone = select_features([files[0], files[2]], max_voxels_per_case=800, seed=1)
    reordered = select_features([files[2], files[0]], max_voxels_per_case=800, seed=1)
    np.testing.assert_allclose(alone.spearman, reordered.spearman, atol=1e-12)


def test_refvi_target_and_progress(cohort):
    files, _, _ = cohort
    calls = []
    result = select_features(
        files, target="refvi", max_voxels_per_case=1000, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert PLANTED_REPRESENTATIVE in result.selected


def test_user_errors(cohort, tmp_path):
    files, _, _ = cohort
    with pytest.raises(DataError, match="no radiomics files"):
        select_features([])
    with pytest.raises(DataError, match="does not exist"):
        select_features([tmp_path / "missing.h5"])
    with pytest.raises(ConfigError, match="target"):
        select_features(files, target="bogus")  # type: ignore[arg-type]
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.create_dataset("features", data=np.zeros((10, 3, 2), dtype=np.float32)).attrs["feature_ids"] = ["x", "y"]
        handle.create_dataset("labels", data=np.zeros(10, dtype=np.uint8))
    with pytest.raises(DataError, match="same radiomics configuration"):
        select_features([files[0], other])


def test_the_selection_file_carries_the_dendrogram_that_was_cut(cohort):
    """linkage_matrix is the Z the clustering cut, over linkage_feature_ids (the constant feature left out), and
    correlation covers every feature in file order: recomputing the linkage from it gives Z again, and cutting Z at
    the chosen distance gives the clusters of the file."""
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    from vent.selection import correlation_distance

    files, _, _ = cohort
    summary = json.loads(json.dumps(select_features(files, max_voxels_per_case=2000).to_dict()))
    assert summary["linkage_feature_ids"] == FEATURE_IDS[:9]  # feat_09 is constant: not clustered
    assert summary["feature_ids"] == FEATURE_IDS and np.shape(summary["correlation"]) == (10, 10)
    linkage_matrix = np.array(summary["linkage_matrix"])
    assert linkage_matrix.shape == (8, 4) and linkage_matrix.dtype == np.float64

    rows = [summary["feature_ids"].index(f) for f in summary["linkage_feature_ids"]]
    correlation = np.array(summary["correlation"])[np.ix_(rows, rows)]
    recomputed = hierarchy.linkage(squareform(correlation_distance(correlation), checks=False), method="average")
    np.testing.assert_allclose(linkage_matrix, recomputed, rtol=0, atol=1e-12)

    labels = hierarchy.fcluster(linkage_matrix, summary["cutoff"], criterion="distance")
    clusters: dict[str, list[str]] = {}
    for feature_id, label in zip(summary["linkage_feature_ids"], labels.tolist()):
        clusters.setdefault(str(label), []).append(feature_id)
    assert clusters == summary["clusters"]
