"""Benchmark how the radiomics stage's per-phase tasks use the cores: one phase task on 1 thread, the same task on
N threads, and N one-thread tasks at once in separate processes (as the ``local`` backend runs them by default).

Usage:
    python scripts/bench_scaling.py PREPROCESSED.h5 [--phase P] [--cores N]

PREPROCESSED.h5 is one case of a run's preprocess stage (``RUN/preprocess/<case>.h5``). For a real-CT patient
(LUNG1-001 from ../shared/data made to breathe, whole lung, 10 phases):

    vent synth /tmp/rc --from-ct LUNG1-001_ct.nii.gz --lung-mask LUNG1-001_mask_Lung-Left.nii.gz \\
        --lung-mask LUNG1-001_mask_Lung-Right.nii.gz --modality spect --slab-mm 0 --cases 3 --workers 2
    vent run CONFIG --only preprocess        # CONFIG: data.root /tmp/rc, the study's preprocess settings

Every timing is :func:`vent.stages.radiomics.compute_radiomics_phase` (the radiomics section's defaults: all 56
features, 26 mm kernel, 64 bins, per-phase kernel masks), written to a scratch file, in a fresh child process; a
warm-up child loads numba's compiled engine first, so no timing includes compiling. Prints the seconds of each,
and against the 1-thread task of the same run: the speed-up of one task on N threads, and the throughput of N
one-thread tasks at once (N x the 1-thread time / the slowest of the N).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(pre: Path, phase: int, threads: int, warm: bool) -> None:
    """Run one phase task (or, with ``warm``, load the compiled engine) and print its seconds as JSON."""
    from vent.config import ExecutionConfig, RadiomicsConfig
    from vent.runner import NullProgress
    from vent.stages.radiomics import compute_radiomics_phase

    if warm:
        from vent.estimate import measure_radiomics

        measure_radiomics(13, 64, "numba", 1, n_centres=64)  # the same compiled engine: its array types are fixed
        print(json.dumps({"seconds": 0.0}))
        return
    execution = ExecutionConfig(backend="serial", threads=threads)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        facts = compute_radiomics_phase(pre, phase, RadiomicsConfig(), execution, Path(scratch) / "phase.h5",
                                        "bench", NullProgress())
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "n_voxels": facts["n_voxels"]}))


def _start(pre: Path, phase: int, threads: int, warm: bool = False) -> subprocess.Popen:
    command = [sys.executable, __file__, str(pre), "--phase", str(phase), "--child-threads", str(threads)]
    return subprocess.Popen(command + (["--warm"] if warm else []), stdout=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a benchmark child failed (exit {process.returncode}); see its error above")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preprocessed", type=Path, help="RUN/preprocess/<case>.h5")
    parser.add_argument("--phase", type=int, default=None, help="phase to compute (default: the middle one)")
    parser.add_argument("--cores", type=int, default=2, help="N: threads of the one task, tasks run at once")
    parser.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cores < 1:
        raise SystemExit(f"--cores {args.cores}: give the number of cores to use, at least 1")
    if not args.preprocessed.is_file():
        raise SystemExit(f"{args.preprocessed} does not exist: pass a case of a run's preprocess stage "
                         "(RUN/preprocess/<case>.h5; the docstring says how to make a real-CT one)")
    if args.phase is None:
        from vent.io.artifacts import read_preprocessed_phase

        args.phase = read_preprocessed_phase(args.preprocessed, 0).n_phases // 2
    if args.child_threads is not None:
        _child(args.preprocessed, args.phase, args.child_threads, args.warm)
        return
    n = args.cores
    _result(_start(args.preprocessed, args.phase, 1, warm=True))
    one = _result(_start(args.preprocessed, args.phase, 1))
    threaded = _result(_start(args.preprocessed, args.phase, n))
    together = [_result(p) for p in [_start(args.preprocessed, args.phase, 1) for _ in range(n)]]
    slowest = max(r["seconds"] for r in together)
    each = ", ".join(f"{r['seconds']:.1f}" for r in together)
    print(f"phase {args.phase} of {args.preprocessed.name} ({one['n_voxels']:,} voxels), all 56 features:")
    print(f"  one task, 1 thread:          {one['seconds']:.1f} s (1.00)")
    print(f"  one task, {n} threads:         {threaded['seconds']:.1f} s "
          f"(speed-up x{one['seconds'] / threaded['seconds']:.2f})")
    print(f"  {n} one-thread tasks at once:  {each} s (throughput x{n * one['seconds'] / slowest:.2f})")


if __name__ == "__main__":
    main()
