"""Settings of voxel-wise radiomic filtering."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vent.errors import ConfigError

BACKENDS = ("auto", "numba", "torch")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class FilterSettings:
    """How voxel-wise feature maps are computed (the study's section 4.4 by default).

    Attributes:
        kernel_voxels: Edge of the cubic kernel in voxels (odd); 13 = 26 mm at 2 mm spacing.
        bin_count: Fixed bin number over the ROI (64 in the study), or None.
        bin_width: Fixed bin width in image units (used when ``bin_count`` is None), or None (image already holds
            grey levels 1..Ng).
        masked_kernel: Intersect the kernel with the mask (pyradiomics default). GLCM pairs count only when both
            voxels are in the kernel; runs stop at voxels outside it.
        dtype: Output dtype, ``float32`` (default) or ``float64``. Computation is float64 in both cases.
        backend: ``numba`` (CPU, sliding window), ``torch`` (dense per-centre matrices, CUDA when available) or
            ``auto`` (torch on CUDA when available, else numba).
        n_workers: CPU threads; None = all available.
        block_size: Centres per block (bounds memory and sets progress granularity).
    """

    kernel_voxels: int = 13
    bin_count: int | None = 64
    bin_width: float | None = None
    masked_kernel: bool = True
    dtype: str = "float32"
    backend: str = "auto"
    n_workers: int | None = None
    block_size: int = 4096

    def __post_init__(self) -> None:
        if self.kernel_voxels < 1 or self.kernel_voxels % 2 == 0:
            raise ConfigError(
                f"kernel_voxels must be an odd positive integer, got {self.kernel_voxels}; use e.g. 13 (26 mm at 2 mm)."
            )
        if self.bin_count is not None and self.bin_count < 1:
            raise ConfigError(f"bin_count must be >= 1 or None, got {self.bin_count}.")
        if self.bin_width is not None and not self.bin_width > 0:
            raise ConfigError(f"bin_width must be > 0 or None, got {self.bin_width}.")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}.")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}.")
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"n_workers must be >= 1 or None, got {self.n_workers}.")
        if self.block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {self.block_size}.")

    @property
    def kernel_radius(self) -> int:
        """Kernel radius in voxels, (kernel_voxels - 1) / 2."""
        return (self.kernel_voxels - 1) // 2


def kernel_voxels_from_mm(kernel_mm: float, spacing_mm: float) -> int:
    """Odd kernel edge in voxels for a kernel edge in millimetres.

    n = 2 * round((kernel_mm / spacing_mm - 1) / 2) + 1, i.e. the odd count nearest to kernel_mm / spacing_mm
    (26 mm at 2 mm -> 13; 26 mm at 1 mm -> 27 since 26 is even and ties go up).

    Args:
        kernel_mm: Kernel edge in mm (> 0).
        spacing_mm: Voxel spacing in mm (> 0); for anisotropic grids pass the spacing of the axis of interest.

    Returns:
        Odd voxel count >= 1.

    Raises:
        ConfigError: A non-positive argument.
    """
    if not kernel_mm > 0 or not spacing_mm > 0:
        raise ConfigError(f"kernel_mm and spacing_mm must be > 0, got kernel_mm={kernel_mm}, spacing_mm={spacing_mm}.")
    half = (kernel_mm / spacing_mm - 1.0) / 2.0
    return 2 * max(0, int(math.floor(half + 0.5))) + 1
