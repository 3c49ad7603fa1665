"""Radiomics stage: the empty-kernel policies on a lung whose lower part leaves the phase mask at one phase.

The analysed lung is a 15^3 box; at phase 0 the phase mask starts 8 voxels above its bottom (the diaphragm risen at
exhalation), so with a 13^3 kernel (radius 6) the two lowest slices of the box have an empty kernel at phase 0:
2 x 15 x 15 = 450 voxel-phases. Phases 1 and 2 hold the whole box.
"""

import numpy as np
import pytest

from vent.config import ExecutionConfig, RadiomicsConfig
from vent.io.artifacts import PreprocessedCase
from vent.io.images import Grid
from vent.io.seals import SEAL_SUFFIX
from vent.radiomics import FilterSettings, compute_voxel_features, discretise
from vent.stages.radiomics import EmptyKernelCounts, case_feature_blocks, filter_settings_from_config

FEATURES = ["intensity_mean", "glcm_joint_entropy", "glrlm_run_entropy"]


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(1)
    shape = (30, 30, 30)
    lung = np.zeros(shape, dtype=np.uint8)
    lung[8:23, 8:23, 8:23] = 1
    masks = np.repeat(lung[None], 3, axis=0)
    masks[0, :16] = 0
    ct = np.where(lung > 0, -800.0, 40.0)[None] + 40.0 * rng.standard_normal((3,) + shape)
    ct[0][(lung > 0) & (np.indices(shape)[0] >= 16)] -= 60.0  # phase 0 differs in its lung
    grid = Grid(shape[::-1], (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return PreprocessedCase("c", ct.astype(np.float32), masks, lung, np.ones(shape, np.float32), lung * 0, grid)


def _run(case, policy):
    config = RadiomicsConfig(features=FEATURES, bin_count=16, empty_kernel=policy)
    settings = filter_settings_from_config(config, (2.0, 2.0, 2.0), ExecutionConfig(threads=1))
    assert settings.n_workers == 1
    coords = np.argwhere(case.lung_mask_zyx > 0).astype(np.int32)
    counts = EmptyKernelCounts.zeros(3)
    blocks = list(case_feature_blocks(case, coords, config, settings, FEATURES, counts))
    values = np.concatenate([b[1] for b in blocks])
    keep = np.concatenate([b[2] for b in blocks])
    return coords, values, keep, counts


def test_setup_has_empty_kernels_without_a_policy(case):
    coords = np.argwhere(case.lung_mask_zyx > 0)
    grey, n_grey = discretise(case.ct_tzyx[0], case.phase_masks_tzyx[0] > 0, bin_count=16)
    settings = FilterSettings(kernel_voxels=13, bin_count=16, n_workers=1)
    raw = compute_voxel_features(case.ct_tzyx[0], grey, case.phase_masks_tzyx[0] > 0, coords, n_grey, settings,
                                 feature_ids=FEATURES)
    empty = coords[:, 0] < 10
    assert np.isnan(raw[empty]).all() and np.isfinite(raw[~empty]).all()
    assert empty.sum() == 450


def test_analysis_mask_policy_recomputes_with_the_union_kernel(case):
    coords, values, keep, counts = _run(case, "analysis_mask")
    assert np.isfinite(values).all() and keep.all()
    assert counts.empty.tolist() == [450, 0, 0] and counts.recomputed.tolist() == [450, 0, 0]
    assert counts.carried.sum() == 0 and counts.dropped_voxels == 0
    low = coords[:, 0] < 10
    # the recomputed kernel holds lung voxels of the analysis mask only (the phase mask is empty there), so the mean is
    # the mean CT of phase 0 over box(v) & (phase mask | lung)
    v = coords[np.flatnonzero(low)[0]]
    union = (case.phase_masks_tzyx[0] > 0) | (case.lung_mask_zyx > 0)
    box = tuple(slice(max(0, c - 6), c + 7) for c in v)
    expected = case.ct_tzyx[0][box][union[box]].mean()
    assert values[np.flatnonzero(low)[0], 0, 0] == pytest.approx(expected, rel=1e-5)


def test_nearest_phase_policy_carries_phase_one(case):
    coords, values, keep, counts = _run(case, "nearest_phase")
    low = coords[:, 0] < 10
    assert keep.all() and counts.carried.tolist() == [450, 0, 0] and counts.recomputed.sum() == 0
    np.testing.assert_array_equal(values[low, 0], values[low, 1])


def test_drop_policy_leaves_the_voxels_out(case):
    coords, values, keep, counts = _run(case, "drop")
    assert (~keep).sum() == 450 and counts.dropped_voxels == 450
    assert np.array_equal(~keep, coords[:, 0] < 10)
    assert np.isfinite(values[keep]).all()


def test_execution_settings_reach_the_engine_and_nothing_else():
    config = RadiomicsConfig(features=FEATURES, bin_count=16)
    default = filter_settings_from_config(config, (2.0, 2.0, 2.0))
    assert default.n_workers is None and default.backend == "auto"
    chosen = filter_settings_from_config(config, (2.0, 2.0, 2.0), ExecutionConfig(threads=3, radiomics_engine="numba"))
    assert chosen.n_workers == 3 and chosen.backend == "numba"
    assert (chosen.kernel_voxels, chosen.bin_count) == (default.kernel_voxels, default.bin_count) == (13, 16)


def test_compaction_keeps_the_chosen_voxels_and_leaves_no_temporary(tmp_path):
    import h5py

    from vent.io.artifacts import compact_radiomics_case, create_radiomics_case, write_radiomics_voxel_data

    rng = np.random.default_rng(0)
    n, t, f = 9000, 3, 4  # more than one 4096-voxel chunk
    features = rng.normal(size=(n, t, f)).astype(np.float32)
    edge = rng.normal(size=(n, t, 3)).astype(np.float32)
    labels = (rng.random(n) < 0.3).astype(np.uint8)
    coords = rng.integers(0, 50, size=(n, 3))
    path = tmp_path / "case.h5"
    with h5py.File(path, "w") as handle:
        create_radiomics_case(handle, n, t, [f"f{i}" for i in range(f)], [""] * f, {"case_id": "c"})[...] = features
        write_radiomics_voxel_data(handle, features[:, :, 0], labels, features[:, 0, 1], coords, edge_ntc=edge)
    keep = rng.random(n) > 0.1
    compact_radiomics_case(path, keep)
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["features"][...], features[keep])
        np.testing.assert_array_equal(handle["edge"][...], edge[keep])
        np.testing.assert_array_equal(handle["labels"][...], labels[keep])
        np.testing.assert_array_equal(handle["coords"][...], coords[keep])
        assert handle.attrs["case_id"] == "c" and list(handle["edge"].attrs["channels"])
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(SEAL_SUFFIX)] == ["case.h5"]


@pytest.mark.parametrize(("policy", "scope"), [("analysis_mask", "phase"), ("nearest_phase", "case"),
                                               ("drop", "phase")])
def test_phase_tasks_then_merge_write_the_one_call_case_bit_for_bit(case, tmp_path, policy, scope):
    """The stage's path (one task per phase, then the merge) and `vent predict`'s (one call, voxel blocks with all
    phases) write the same file contents; each policy's recomputation and the lung-edge channels run in the phase
    tasks, carrying and dropping in the merge."""
    import h5py

    from vent.io.artifacts import write_preprocessed_case
    from vent.runner import NullProgress
    from vent.stages.radiomics import compute_radiomics_case, compute_radiomics_phase

    config = RadiomicsConfig(features=FEATURES, bin_count=16, empty_kernel=policy, discretisation_scope=scope)
    execution = ExecutionConfig(threads=1)
    pre_path = tmp_path / "pre.h5"
    write_preprocessed_case(pre_path, case, "pre-fp")
    direct = tmp_path / "direct.h5"
    facts = compute_radiomics_case(case, config, execution, direct, "fp", NullProgress())
    parts = [tmp_path / f"phase_{t}.h5" for t in range(3)]
    phase_facts = [compute_radiomics_phase(pre_path, t, config, execution, parts[t], "fp", NullProgress())
                   for t in range(3)]
    assert [f["n_voxels"] for f in phase_facts] == [15**3] * 3
    merged = tmp_path / "merged.h5"
    assert compute_radiomics_case(case, config, execution, merged, "fp", NullProgress(), phase_files=parts) == facts
    with h5py.File(direct, "r") as a, h5py.File(merged, "r") as b:
        assert sorted(a) == sorted(b) and dict(a.attrs).keys() == dict(b.attrs).keys()
        for name in a:
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
        for key in a.attrs:
            assert np.array_equal(a.attrs[key], b.attrs[key]), key
    if policy == "drop":
        assert facts["n_voxels"] == 15**3 - 450


def test_a_merge_refuses_a_phase_file_of_another_phase(case, tmp_path):
    from vent.errors import ArtifactError
    from vent.io.artifacts import write_preprocessed_case
    from vent.runner import NullProgress
    from vent.stages.radiomics import compute_radiomics_case, compute_radiomics_phase

    config = RadiomicsConfig(features=FEATURES, bin_count=16)
    pre_path = tmp_path / "pre.h5"
    write_preprocessed_case(pre_path, case, "pre-fp")
    parts = [tmp_path / f"phase_{t}.h5" for t in range(3)]
    for t in range(3):
        compute_radiomics_phase(pre_path, t, config, ExecutionConfig(threads=1), parts[t], "fp", NullProgress())
    with pytest.raises(ArtifactError, match=r"phase_0\.h5 is not phase 1 of c .*delete it and re-run"):
        compute_radiomics_case(case, config, ExecutionConfig(threads=1), tmp_path / "out.h5", "fp", NullProgress(),
                               phase_files=[parts[0], parts[0], parts[2]])
    with pytest.raises(ArtifactError, match="not phase 0 of c"):  # another fingerprint: another run's settings
        compute_radiomics_case(case, config, ExecutionConfig(threads=1), tmp_path / "out.h5", "other",
                               NullProgress(), phase_files=parts)


def test_a_phase_file_of_the_older_layout_or_without_its_edge_channels_is_refused(case, tmp_path):
    """Phase files of format 1 held raw features only (the merge recomputed and made the edge channels): a resumed
    run must recompute such a phase, not merge it as if the phase task had done its part."""
    import h5py

    from vent.errors import ArtifactError
    from vent.io.artifacts import open_radiomics_phase, write_preprocessed_case
    from vent.runner import NullProgress
    from vent.stages.radiomics import compute_radiomics_phase

    config = RadiomicsConfig(features=FEATURES, bin_count=16)
    pre_path = tmp_path / "pre.h5"
    write_preprocessed_case(pre_path, case, "pre-fp")
    part = tmp_path / "phase_0.h5"
    compute_radiomics_phase(pre_path, 0, config, ExecutionConfig(threads=1), part, "fp", NullProgress())
    handle, attrs = open_radiomics_phase(part)
    handle.close()
    assert attrs["empty_kernel"] == {"empty": 450, "undefined": 0, "recomputed": 450}
    with h5py.File(part, "a") as handle:
        del handle["edge"]
    with pytest.raises(ArtifactError, match=r"phase_0\.h5 has no /edge .*re-run the radiomics stage"):
        open_radiomics_phase(part)
    with h5py.File(part, "a") as handle:
        handle.attrs["format_version"] = 1
    with pytest.raises(ArtifactError, match=r"phase_0\.h5 has format_version 1; this vent reads format 2"):
        open_radiomics_phase(part)
