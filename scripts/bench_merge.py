"""Benchmark the radiomics stage's merge (the one serial step of a case) against another git revision's.

Usage:
    python scripts/bench_merge.py PREPROCESSED.h5 --compare-rev REV [--rounds 3]

PREPROCESSED.h5 is one case of a run's preprocess stage (``RUN/preprocess/<case>.h5``; ``scripts/bench_scaling.py``
says how to make a real-CT one from LUNG1-001). The merge (:func:`vent.stages.radiomics.compute_radiomics_case` with
the phase files) reads the case, stacks its T phase files into the (N, T, F) features, applies the empty-kernel
policy across the phases, writes ``radiomics/<case>.h5`` with the voxel data and seals it.

Each round runs two fresh child processes, this checkout's ``src`` then REV's (``git archive``), alternating so the
machine's load falls on both alike. Each child writes phase files as its own revision's phase tasks would (the same
seeded random features, all 56, the radiomics section's defaults; with this checkout, also each phase's lung-edge
channels and empty-kernel tallies, which its phase tasks compute), then times one whole merge task: reading the
preprocessed case, the merge, the atomic write and the seal. Prints each child's seconds, the minimum of each
revision over the rounds and their ratio, and whether the two revisions' merged files are equal array for array
and attribute for attribute.
The random features hold no NaN, so neither merge recomputes an empty kernel; on a case that has some, the older
merge also recomputed them, serially.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(pre_path: Path, src: Path, scratch: Path) -> None:
    """In a fresh process with ``src`` first on the path: write the phase files, time one merge, print JSON."""
    sys.path.insert(0, str(src))
    import h5py
    import numpy as np

    import vent
    from vent.config import ExecutionConfig, RadiomicsConfig
    from vent.io import artifacts
    from vent.io.atomic import atomic_path
    from vent.radiomics import discretise
    from vent.runner import NullProgress
    from vent.stages.radiomics import compute_radiomics_case, filter_settings_from_config, selected_feature_specs

    if not Path(vent.__file__).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"imported vent from {vent.__file__}, not from {src}")
    config, execution = RadiomicsConfig(), ExecutionConfig(backend="serial", threads=1)
    ids = [spec.id for spec in selected_feature_specs(config.features)]
    pre = artifacts.read_preprocessed_case(pre_path)
    coords = np.argwhere(pre.lung_mask_zyx > 0).astype(np.int32)
    kernel_voxels = filter_settings_from_config(config, pre.grid.spacing_mm_zyx, execution).kernel_voxels
    rng = np.random.default_rng(0)
    phase_files = []
    for t in range(pre.n_phases):
        path = scratch / f"phase_{t:02d}.h5"
        _, n_grey = discretise(pre.ct_tzyx[t], pre.phase_masks_tzyx[t] > 0, bin_count=config.bin_count)
        attrs = {"case_id": pre.case_id, "fingerprint": "bench", "phase": t, "n_grey": int(n_grey)}
        with h5py.File(path, "w") as handle:
            artifacts.create_radiomics_phase(handle, len(coords), ids, attrs)[:] = rng.random(
                (len(coords), len(ids)), dtype=np.float32)
            if hasattr(artifacts, "finish_radiomics_phase"):  # phase tasks that write their edge channels
                from vent.radiomics.lung_edge import phase_edge_channels

                edge = phase_edge_channels(pre.phase_masks_tzyx[t], coords, pre.grid.spacing_mm_zyx, kernel_voxels)
                artifacts.finish_radiomics_phase(handle, edge, {"empty": 0, "undefined": 0, "recomputed": 0})
        phase_files.append(path)
    del pre
    started = time.perf_counter()
    case = artifacts.read_preprocessed_case(pre_path)  # as the merge task does (compute_radiomics_job)
    with atomic_path(scratch / "case.h5") as tmp:
        compute_radiomics_case(case, config, execution, tmp, "bench", NullProgress(), phase_files=phase_files)
    print(json.dumps({"seconds": time.perf_counter() - started, "n_voxels": len(coords), "n_phases": case.n_phases}))


def _run_child(pre: Path, src: Path, scratch: Path) -> dict:
    command = [sys.executable, __file__, str(pre), "--child-src", str(src), "--scratch", str(scratch)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the merge child for {src} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _same_files(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        same_attrs = sorted(x.attrs) == sorted(y.attrs) and all(np.array_equal(x.attrs[k], y.attrs[k]) for k in x.attrs)
        return sorted(x) == sorted(y) and all(np.array_equal(x[k][...], y[k][...]) for k in x) and same_attrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preprocessed", type=Path, help="RUN/preprocess/<case>.h5")
    parser.add_argument("--compare-rev", default=None, help="the git revision to time against (required)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the minimum of each is kept)")
    parser.add_argument("--child-src", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_src is not None:
        _child(args.preprocessed, args.child_src, args.scratch)
        return
    if not args.preprocessed.is_file():
        raise SystemExit(f"{args.preprocessed} is not a file: pass RUN/preprocess/<case>.h5 of a preprocess stage")
    if args.compare_rev is None or args.rounds < 1:
        raise SystemExit("pass --compare-rev REV (a git revision of this repository) and --rounds of at least 1")
    with tempfile.TemporaryDirectory(prefix="vent_bench_merge_") as folder:
        folder = Path(folder)
        reference_src = folder / "reference"
        reference_src.mkdir()
        archive = subprocess.run(["git", "archive", args.compare_rev, "src"], cwd=ROOT, check=True,
                                 stdout=subprocess.PIPE).stdout
        subprocess.run(["tar", "-x", "-C", str(reference_src)], input=archive, check=True)
        sources = {"this checkout": ROOT / "src", args.compare_rev: reference_src / "src"}
        seconds: dict[str, list[float]] = {name: [] for name in sources}
        for round_ in range(args.rounds):
            for name, src in sources.items():
                scratch = folder / f"{round_}-{len(seconds[name])}-{name.replace(' ', '_')}"
                scratch.mkdir()
                result = _run_child(args.preprocessed, src, scratch)
                seconds[name].append(result["seconds"])
                print(f"round {round_ + 1}: {name}: merge of {result['n_voxels']:,} voxels x {result['n_phases']} "
                      f"phases in {result['seconds']:.2f} s", flush=True)
        best = {name: min(values) for name, values in seconds.items()}
        print(f"\nminimum over {args.rounds} rounds: this checkout {best['this checkout']:.2f} s, "
              f"{args.compare_rev} {best[args.compare_rev]:.2f} s, "
              f"speed-up x{best[args.compare_rev] / best['this checkout']:.2f}")
        first = {name: folder / f"0-0-{name.replace(' ', '_')}" / "case.h5" for name in sources}
        print("merged files equal array for array and attribute for attribute:", _same_files(*first.values()))


if __name__ == "__main__":
    main()
