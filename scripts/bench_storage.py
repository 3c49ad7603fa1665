"""Benchmark how radiomic features are stored: gzip-compressed against vent's uncompressed chunked layout.

Reads the ``/features`` array of a radiomics file a run wrote (real texture matters: random numbers compress
differently), then, in this process, writes it to a scratch HDF5 with each storage option in the same chunk layout
vent uses and reads it back. Prints seconds, size on disk, and each option's ratios against vent's layout
(``vent.io.artifacts._FEATURE_STORAGE``). Machines are noisy: compare the ratios of one invocation.

Usage::

    python scripts/bench_storage.py runs/pet/radiomics/Subject_01.h5
    python scripts/bench_storage.py runs/pet/radiomics/Subject_01.h5 --repeat 3 --scratch /tmp
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

OPTIONS: dict[str, dict[str, Any]] = {
    "gzip4+shuffle (earlier vent)": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "gzip1+shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
}


def _time_option(features: np.ndarray, chunks: tuple[int, ...], storage: dict[str, Any], scratch: Path,
                 repeat: int) -> tuple[float, float, int]:
    """Best-of-``repeat`` (write seconds, read seconds) and bytes on disk of ``features`` stored with ``storage``."""
    path = scratch / "bench_storage.h5"
    writes, reads = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        with h5py.File(path, "w") as handle:
            handle.create_dataset("features", data=features, chunks=chunks, **storage)
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        with h5py.File(path, "r") as handle:
            back = handle["features"][...]
        reads.append(time.perf_counter() - started)
        if not np.array_equal(back, features, equal_nan=True):
            raise SystemExit(f"storage {storage} did not give the features back unchanged")
    size = path.stat().st_size
    path.unlink()
    return min(writes), min(reads), size


def main() -> None:
    from vent.io.artifacts import _FEATURE_STORAGE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("radiomics_file", type=Path, help="a <case>.h5 from a run's radiomics/ folder")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many writes and reads per option")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the scratch file (default: temp)")
    args = parser.parse_args()
    with h5py.File(args.radiomics_file, "r") as handle:
        if "features" not in handle:
            raise SystemExit(f"{args.radiomics_file} has no /features dataset: pass a radiomics/<case>.h5")
        features = handle["features"][...]
        chunks = handle["features"].chunks or (min(4096, len(features)),) + features.shape[1:]
    print(f"{args.radiomics_file}: features {features.shape} float32 = {features.nbytes / 1e6:.0f} MB, chunks {chunks}")
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        base = _time_option(features, chunks, _FEATURE_STORAGE, Path(scratch), args.repeat)
        rows = [("vent (uncompressed, chunked)", base)]
        rows += [(name, _time_option(features, chunks, storage, Path(scratch), args.repeat))
                 for name, storage in OPTIONS.items()]
    print(f"{'storage':30s} {'write s':>8s} {'read s':>7s} {'MB':>6s} {'write x':>8s} {'read x':>7s} {'size x':>7s}")
    for name, (write, read, size) in rows:
        print(f"{name:30s} {write:8.2f} {read:7.2f} {size / 1e6:6.0f} {write / base[0]:8.1f} {read / base[1]:7.1f} "
              f"{size / base[2]:7.2f}")


if __name__ == "__main__":
    main()
