"""Benchmark the CT-ventilation registration (end-exhale fixed, end-inhale moving) on preprocessed cases.

For each ``preprocess/<case>.h5`` given, registers the case with the default ``RegistrationParams`` (or the
backend asked for) once per thread count, in this process, and prints the seconds, the lung voxels, the folding
share and the ratio of each run's time to the first thread count's (machines are noisy: compare the ratios, and
the seconds only between runs of one invocation). The one-off import of itk (about 10 s) is timed apart.

Usage::

    python scripts/bench_registration.py runs/demo_full/preprocess/Subject_01.h5 --threads 1 2
    # a full-size real-CT patient: a semi-real cohort from ../shared, preprocessed
    vent synth /tmp/semireal --from-ct ../shared/data/lung_ct/lung1-001/LUNG1-001_ct.nii.gz \\
        --lung-mask ../shared/data/lung_ct/lung1-001/LUNG1-001_mask_Lung-Left.nii.gz \\
        --lung-mask ../shared/data/lung_ct/lung1-001/LUNG1-001_mask_Lung-Right.nii.gz --cases 1
    # (then `vent run CONFIG --only preprocess` on it, and pass its preprocess/<case>.h5 here)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", type=Path, help="preprocess/<case>.h5 files")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts to compare")
    parser.add_argument("--backend", default="elastix", choices=["elastix", "simpleitk"])
    args = parser.parse_args()

    from vent.baselines.ctvi import jacobian_determinant
    from vent.baselines.registration import register_phases, registration_mask
    from vent.io.artifacts import read_preprocessed_case
    from vent.models.registry import RegistrationParams

    params = RegistrationParams(backend=args.backend)
    if args.backend == "elastix":
        started = time.perf_counter()
        import itk

        itk.ParameterObject.New()  # itk loads its modules lazily: the first use pays the import
        print(f"itk import: {time.perf_counter() - started:.1f} s (once per process)")
    print(f"{'case':>16} {'grid (z, y, x)':>16} {'lung voxels':>12} {'threads':>8} {'seconds':>8} {'ratio':>6} "
          f"{'folded %':>9}")
    for path in args.cases:
        pre = read_preprocessed_case(path)
        exhale, inhale = int(pre.attrs["exhale_phase"]), int(pre.attrs["inhale_phase"])
        mask = registration_mask(pre.phase_masks_tzyx[exhale], pre.grid.spacing_mm_zyx, params.mask_dilation_mm)
        lung = pre.phase_masks_tzyx[exhale] > 0
        first = None
        for threads in args.threads:
            started = time.perf_counter()
            result = register_phases(pre.ct_tzyx[exhale], pre.ct_tzyx[inhale], mask, pre.grid, params, threads)
            seconds = time.perf_counter() - started
            first = first or seconds
            folded = 100 * float((jacobian_determinant(result.displacement_zyx, pre.grid.spacing_mm_zyx)[lung] <= 0)
                                 .mean())
            print(f"{pre.case_id:>16} {str(pre.grid.shape_zyx):>16} {int(lung.sum()):>12} {threads:>8} "
                  f"{seconds:>8.1f} {seconds / first:>6.2f} {folded:>9.3f}")


if __name__ == "__main__":
    main()
