"""Determinism on CPU: the same config and seed give bit-identical artifacts, and every manifest records its seeds.

The tiny cohort goes through every stage (preprocess .. report) twice, into two run folders, in one process (so a
random draw that is not seeded would see another global state the second time): the session's tiny run (its report
made in a copy) and a fresh run. ``vent.io.compare`` compares every
artifact; what legitimately differs between two runs (timestamps, durations, the host, absolute paths) is listed
there, in one place, with the reason.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from tinyrun import UPSTREAM, run_stages, tiny_config
from vent.io import layout
from vent.io.compare import NOT_COMPARED, RUN_SPECIFIC, compare_run_folders

STAGES = (*UPSTREAM, "report")

SEEDS = {
    "preprocess": ["data.synthetic.seed"],  # the synthetic cohort's generator
    "split": ["cv.seed"],  # the patient folds
    "radiomics": [],  # no random draw: filtering only
    "select": ["cv.seed"],  # the voxels sampled for the correlations and the Spearman score
    "train": ["train.seed"],  # weights, voxel sampling and batch order (train.seed + fold index)
    "evaluate": [],  # no random draw: scoring only
    "explain": ["explain.seed"],  # the explained voxels, the deletion curve's random orders, the random model
    "report": [],  # no random draw
}
"""The seeds each stage's manifest records (``definition.config``), and why a stage records none."""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_full_run, tiny_data):
    """The session's tiny run (preprocess .. explain; its report made in a copy) and a fresh run of every stage."""
    import torch

    threads = torch.get_num_threads()
    first = tiny_full_run
    second = tmp_path_factory.mktemp("determinism_b") / "run"
    plans, _ = run_stages(tiny_config(second, tiny_data), STAGES)
    assert [p.action for p in plans] == ["run"] * len(STAGES)
    torch.set_num_threads(threads)
    return first.run_dir, second


def test_two_runs_of_one_config_give_bit_identical_artifacts(two_runs):
    a, b = two_runs
    assert compare_run_folders(a, b) == []
    n_files = sum(1 for p in a.rglob("*") if p.is_file())
    kinds = {p.suffix for p in a.rglob("*") if p.is_file()}
    assert n_files > 50 and {".h5", ".json", ".csv", ".pt", ".png", ".svg", ".gz"} <= kinds, kinds


def test_model_files_are_byte_identical(two_runs):
    """model.pt is compared by its bytes (torch.save of the same weights into a random temporary name once gave
    another archive folder name inside the zip)."""
    a, b = two_runs
    models = sorted(p.relative_to(a) for p in a.glob("train/*/fold_*/model.pt"))
    assert models
    assert all((a / m).read_bytes() == (b / m).read_bytes() for m in models)


def test_every_manifest_records_the_seeds_its_stage_used(two_runs):
    a, _ = two_runs
    assert set(SEEDS) == set(STAGES)
    for stage, keys in SEEDS.items():
        manifest = json.loads(layout.manifest_file(a, stage).read_text())
        config = manifest["definition"]["config"]
        for key in keys:
            node = config
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{stage} manifest lacks {key}"
                node = node[part]
            assert isinstance(node, int), (stage, key, node)


def test_the_comparer_finds_every_kind_of_change_and_excludes_only_the_listed_fields(two_runs, tmp_path):
    """A changed voxel, attribute, CSV byte, weight or JSON value is found; a timestamp is not a difference."""
    import torch

    a, b = two_runs
    c = tmp_path / "run"
    shutil.copytree(b, c)
    manifest = layout.manifest_file(c, "train")
    record = json.loads(manifest.read_text())
    record["provenance"]["started"] = "1999-01-01T00:00:00+00:00"
    record["provenance"]["seconds"] = 1e6
    manifest.write_text(json.dumps(record, indent=2) + "\n")
    assert compare_run_folders(a, c) == []

    case = next(iter(sorted((c / "preprocess").glob("*.h5"))))
    with h5py.File(case, "r+") as handle:
        ct = handle["ct"][()]
        ct.flat[0] = np.nextafter(ct.flat[0], np.float32(np.inf))
        handle["ct"][...] = ct
        handle.attrs["inhale_phase"] = int(handle.attrs["inhale_phase"]) + 1
    cohort = layout.cohort_file(c)
    cohort.write_bytes(cohort.read_bytes().replace(b"\n", b"\r\n", 1))
    model = next(iter(sorted(c.glob("train/*/fold_*/model.pt"))))
    payload = torch.load(model, weights_only=False)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first].clone()
    payload["state_dict"][first].view(-1)[0] += 1e-6
    torch.save(payload, model)
    record["definition"]["config"]["train"]["seed"] = 1
    manifest.write_text(json.dumps(record, indent=2) + "\n")

    found = compare_run_folders(a, c)
    named = {line.split(":")[0] for line in found}
    assert named == {
        case.relative_to(c).as_posix(), cohort.relative_to(c).as_posix(), model.relative_to(c).as_posix(),
        manifest.relative_to(c).as_posix(),
    }, found
    text = "\n".join(found)
    assert "dataset ct differs" in text and "attribute inhale_phase" in text
    assert "definition.config.train.seed: 0 vs 1" in text


def test_the_exclusions_are_few_and_each_has_a_reason():
    assert all(reason.strip() for reason in [*RUN_SPECIFIC.values(), *NOT_COMPARED.values()])
    excluded_keys = {key.rsplit(".", 1)[-1] for _, key in RUN_SPECIFIC}
    timing = {key for key in excluded_keys if "seconds" in key}
    # tasks, per_task: what one invocation computed (a resumed run computes only what a crash left undone)
    assert excluded_keys - timing <= {"started", "host", "platform", "config_file", "config_sha256", "worker", "tasks",
                                      "per_task"}
