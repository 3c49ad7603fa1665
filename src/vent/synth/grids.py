"""Grids, smooth random fields and partial-volume shapes used by the synthetic 4DCT generator.

Array convention throughout ``vent.synth``: numpy arrays are indexed ``[z, y, x]`` (SimpleITK's
``GetArrayFromImage`` order); spacings and origins are given in SimpleITK order ``(x, y, z)`` in mm. Directions are
the identity (LPS patient axes: +x patient left, +y posterior, +z superior), so the physical position of voxel
``[k, j, i]`` is ``origin + (i, j, k) * spacing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """A regular axis-aligned 3D grid in physical space.

    Attributes:
        shape_zyx: Number of voxels along (z, y, x).
        spacing_mm_xyz: Voxel size in mm along (x, y, z).
        origin_mm_xyz: Physical position in mm of the centre of voxel [0, 0, 0], (x, y, z).
    """

    shape_zyx: tuple[int, int, int]
    spacing_mm_xyz: tuple[float, float, float]
    origin_mm_xyz: tuple[float, float, float]

    @property
    def spacing_mm_zyx(self) -> tuple[float, float, float]:
        """Voxel size in mm in array order (z, y, x)."""
        return (self.spacing_mm_xyz[2], self.spacing_mm_xyz[1], self.spacing_mm_xyz[0])

    @property
    def origin_mm_zyx(self) -> tuple[float, float, float]:
        """Origin in mm in array order (z, y, x)."""
        return (self.origin_mm_xyz[2], self.origin_mm_xyz[1], self.origin_mm_xyz[0])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm^3)."""
        return float(np.prod(self.spacing_mm_xyz)) / 1000.0

    def axes_mm_zyx(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical coordinates (mm) of voxel centres along z, y and x, each a 1D float32 array."""
        return tuple(  # type: ignore[return-value]
            (o + s * np.arange(n)).astype(np.float32)
            for o, s, n in zip(self.origin_mm_zyx, self.spacing_mm_zyx, self.shape_zyx)
        )

    def mesh_mm_zyx(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable open mesh (z[:,None,None], y[None,:,None], x[None,None,:]) of coordinates in mm."""
        z, y, x = self.axes_mm_zyx()
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def to_image(self, array_zyx: np.ndarray) -> sitk.Image:
        """Wrap an array of shape ``shape_zyx`` as a SimpleITK image carrying this grid's geometry."""
        if array_zyx.shape != self.shape_zyx:
            raise ValueError(f"array shape {array_zyx.shape} does not match grid shape {self.shape_zyx}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
        image.SetSpacing([float(v) for v in self.spacing_mm_xyz])
        image.SetOrigin([float(v) for v in self.origin_mm_xyz])
        image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return image

    def reference_image(self) -> sitk.Image:
        """An empty image with this grid's geometry, for ``sitk.Resample``."""
        image = sitk.Image([int(n) for n in self.shape_zyx[::-1]], sitk.sitkUInt8)
        image.SetSpacing([float(v) for v in self.spacing_mm_xyz])
        image.SetOrigin([float(v) for v in self.origin_mm_xyz])
        return image


def grid_covering(
    low_mm_zyx: np.ndarray, high_mm_zyx: np.ndarray, spacing_mm_xyz: tuple[float, float, float], offset_mm_xyz=(0, 0, 0)
) -> Grid:
    """The smallest grid with the given spacing whose voxel centres cover a physical box.

    Args:
        low_mm_zyx: Lower corner of the box in mm, (z, y, x).
        high_mm_zyx: Upper corner of the box in mm, (z, y, x).
        spacing_mm_xyz: Voxel size in mm, (x, y, z).
        offset_mm_xyz: Added to the origin (to place the grid at non-aligned physical positions).

    Returns:
        The grid.
    """
    spacing_zyx = np.array(spacing_mm_xyz[::-1], dtype=float)
    shape = np.ceil((np.asarray(high_mm_zyx) - np.asarray(low_mm_zyx)) / spacing_zyx).astype(int) + 1
    origin_zyx = np.asarray(low_mm_zyx, dtype=float) + np.asarray(offset_mm_xyz[::-1], dtype=float)
    return Grid(
        shape_zyx=tuple(int(v) for v in shape),
        spacing_mm_xyz=tuple(float(v) for v in spacing_mm_xyz),
        origin_mm_xyz=tuple(float(v) for v in origin_zyx[::-1]),
    )


def interpolate_separable(
    values_zyx: np.ndarray, index_z: np.ndarray, index_y: np.ndarray, index_x: np.ndarray
) -> np.ndarray:
    """Trilinear interpolation of a grid onto the tensor product of 1D fractional index vectors.

    Because the target points form a grid aligned with the source axes, trilinear interpolation factorises into three
    1D linear interpolations, which is much faster than ``map_coordinates`` on the full target grid. Indices outside
    the source are clamped to its border (constant extrapolation).

    Args:
        values_zyx: Source array, shape (nz, ny, nx).
        index_z: Fractional source indices along z for each target slice, shape (mz,).
        index_y: Fractional source indices along y, shape (my,).
        index_x: Fractional source indices along x, shape (mx,).

    Returns:
        Interpolated float32 array of shape (mz, my, mx).
    """
    out = values_zyx.astype(np.float32, copy=False)
    for axis, index in enumerate((index_z, index_y, index_x)):
        n = out.shape[axis]
        index = np.clip(np.asarray(index, dtype=np.float64), 0.0, n - 1.0)
        lower = np.floor(index).astype(np.intp)
        upper = np.minimum(lower + 1, n - 1)
        weight_shape = [1, 1, 1]
        weight_shape[axis] = -1
        weight = (index - lower).astype(np.float32).reshape(weight_shape)
        out = out.take(lower, axis=axis) * (1.0 - weight) + out.take(upper, axis=axis) * weight
    return out


def fractional_indices(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional indices into ``source`` of the voxel centres of ``target`` along z, y and x."""
    return tuple(  # type: ignore[return-value]
        (axis - o) / s for axis, o, s in zip(target.axes_mm_zyx(), source.origin_mm_zyx, source.spacing_mm_zyx)
    )


def resample_grid(values_zyx: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """Trilinearly resample a field from one axis-aligned grid onto another (physical space)."""
    return interpolate_separable(values_zyx, *fractional_indices(source, target))


def correlated_noise(rng: np.random.Generator, shape_zyx: tuple[int, int, int], sigma_vox_zyx) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise with Gaussian spatial correlation.

    Args:
        rng: Random generator (consumed).
        shape_zyx: Output shape.
        sigma_vox_zyx: Correlation length (Gaussian sigma) in voxels per axis; 0 leaves an axis uncorrelated.

    Returns:
        float32 array of the given shape, standardised to mean 0 and standard deviation 1.
    """
    noise = rng.standard_normal(shape_zyx, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=sigma_vox_zyx, mode="wrap", truncate=3.0)
    noise -= noise.mean()
    std = float(noise.std())
    if std > 0:
        noise /= std
    return noise


def box_partial_volume(signed_distance_mm: np.ndarray, spacing_mm_zyx) -> np.ndarray:
    """Fraction of each voxel inside a shape, from a signed distance to its surface.

    For a locally planar surface with unit normal n, the fraction of a box voxel (sides d_z, d_y, d_x) inside the
    shape falls from 1 to 0 as the signed distance d goes from -L/2 to +L/2, where L = sum_i |n_i| d_i is the extent
    of the voxel along the normal. We use the linear ramp ``clip(0.5 - d / L, 0, 1)``, which models the partial
    volume effect of a CT voxel (including thick slices) at lung, vessel and bone edges. Since n = grad d / |grad d|,
    d / L = d / sum_i |d_i * dd/dx_i| * |grad d|, which is unchanged when d is any smooth multiple of the true
    distance, so an implicit function with roughly the right zero set is enough.

    Args:
        signed_distance_mm: Approximate signed distance in mm (negative inside), shape (nz, ny, nx).
        spacing_mm_zyx: Voxel size in mm along (z, y, x).

    Returns:
        float32 occupancy in [0, 1], same shape.
    """
    gradients = np.gradient(signed_distance_mm, *spacing_mm_zyx)
    extent = sum(np.abs(g) * s for g, s in zip(gradients, spacing_mm_zyx))
    extent = np.maximum(extent, 1e-3).astype(np.float32)
    return np.clip(0.5 - signed_distance_mm / extent, 0.0, 1.0).astype(np.float32)


def ellipse_signed_distance(dx: np.ndarray, dy: np.ndarray, radius_x, radius_y) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipse, measured along the ray from its centre.

    With rho = sqrt((dx/a)^2 + (dy/b)^2) the ellipse's boundary along the ray through a point at radius r lies at
    r / rho, so d = r - r / rho = r (1 - 1/rho). Exact along that ray, close to the Euclidean distance near the
    surface. Radii may be arrays (tapered shapes); non-positive radii mean "outside".
    """
    radius_x = np.maximum(radius_x, 1e-3)
    radius_y = np.maximum(radius_y, 1e-3)
    radius = np.sqrt(dx * dx + dy * dy)
    rho = np.sqrt((dx / radius_x) ** 2 + (dy / radius_y) ** 2)
    return (radius - radius / np.maximum(rho, 1e-6)).astype(np.float32)
