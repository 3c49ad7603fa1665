"""Reading medical images and resampling them in physical space.

Axis order, stated once for the whole project: SimpleITK images index (x, y, z); every numpy array in vent is
(z, y, x) (``sitk.GetArrayFromImage`` order), and 4D arrays are (t, z, y, x). Spacings are stored as
``spacing_mm_xyz`` when they come from SimpleITK and ``spacing_mm_zyx`` when they describe a numpy array; origins
are physical (x, y, z) in mm; directions are 3x3 row-major cosine matrices as SimpleITK gives them.
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from vent.errors import DataError
from vent.io.checks import check_ct_intensities, check_lung_mask

log = logging.getLogger(__name__)

__all__ = [
    "Grid",
    "read_image",
    "read_ct",
    "read_lung_mask",
    "grid_of",
    "make_isotropic_grid",
    "resample_to_grid",
    "image_from_array",
]


@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space: size (x, y, z), spacing (x, y, z) mm, origin (x, y, z) mm, direction 3x3."""

    size_xyz: tuple[int, int, int]
    spacing_mm_xyz: tuple[float, float, float]
    origin_mm_xyz: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """The numpy shape of an array on this grid."""
        return (self.size_xyz[2], self.size_xyz[1], self.size_xyz[0])

    @property
    def spacing_mm_zyx(self) -> tuple[float, float, float]:
        return (self.spacing_mm_xyz[2], self.spacing_mm_xyz[1], self.spacing_mm_xyz[0])

    def reference_image(self) -> sitk.Image:
        """An empty image carrying this grid (for ``sitk.Resample``)."""
        image = sitk.Image([int(s) for s in self.size_xyz], sitk.sitkUInt8)
        image.SetSpacing(self.spacing_mm_xyz)
        image.SetOrigin(self.origin_mm_xyz)
        image.SetDirection(self.direction)
        return image

    def crop(self, start_zyx: tuple[int, int, int], shape_zyx: tuple[int, int, int]) -> Grid:
        """The sub-grid starting at voxel ``start_zyx`` with ``shape_zyx`` voxels."""
        index_xyz = [int(start_zyx[2]), int(start_zyx[1]), int(start_zyx[0])]
        origin = self.reference_image().TransformIndexToPhysicalPoint(index_xyz)
        return Grid(
            size_xyz=(int(shape_zyx[2]), int(shape_zyx[1]), int(shape_zyx[0])),
            spacing_mm_xyz=self.spacing_mm_xyz,
            origin_mm_xyz=tuple(float(v) for v in origin),
            direction=self.direction,
        )

    def to_attrs(self) -> dict[str, object]:
        return {
            "size_xyz": list(self.size_xyz),
            "spacing_mm_xyz": list(self.spacing_mm_xyz),
            "origin_mm_xyz": list(self.origin_mm_xyz),
            "direction": list(self.direction),
        }

    @classmethod
    def from_attrs(cls, attrs: object) -> Grid:
        get = attrs.__getitem__  # works for dicts and h5py attribute managers
        return cls(
            size_xyz=tuple(int(v) for v in get("size_xyz")),
            spacing_mm_xyz=tuple(float(v) for v in get("spacing_mm_xyz")),
            origin_mm_xyz=tuple(float(v) for v in get("origin_mm_xyz")),
            direction=tuple(float(v) for v in get("direction")),
        )


def grid_of(image: sitk.Image) -> Grid:
    """The grid an image lives on."""
    return Grid(
        size_xyz=tuple(int(v) for v in image.GetSize()),
        spacing_mm_xyz=tuple(float(v) for v in image.GetSpacing()),
        origin_mm_xyz=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
    )


def read_image(path: Path, what: str = "image", allow_nan: bool = False) -> sitk.Image:
    """Read a 3D image (a file, or a folder of one DICOM series) with SimpleITK, with errors that name the file.

    Args:
        path: any format SimpleITK reads (.mha, .mhd, .nii.gz, .nrrd, ...), or a folder holding one DICOM series
            (``read_dicom_series``).
        what: what the file is, for the error message ("phase image", "lung mask", ...).
        allow_nan: accept NaN/inf values (the caller checks where they are).

    Raises:
        DataError: the file is missing, unreadable, truncated, not 3D, or holds NaN/inf values. The voxels are
            read, so a file cut short is caught here (for NIfTI, whose reader pads it with zeros, by its length).
    """
    path = Path(path)
    if path.is_dir():
        return _checked(read_dicom_series(path, what), path, what, allow_nan)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; check the data root and the subject's folder")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        log.debug("SimpleITK could not read %s: %s", path, error)
        raise DataError(
            f"{what} {path} could not be read by SimpleITK: it is truncated, corrupt or not an image. Copy or export "
            "the file again, or leave the subject out with data.exclude and a reason"
        ) from None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path, what)
    return _checked(image, path, what, allow_nan)


def _checked(image: sitk.Image, path: Path, what: str, allow_nan: bool) -> sitk.Image:
    """``image`` if it is one scalar 3D volume with finite values (unless ``allow_nan``); else a DataError."""
    if image.GetDimension() != 3:
        raise DataError(f"{what} {path} is {image.GetDimension()}D; vent needs one 3D volume per file")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components; expected a scalar image"
        )
    if not allow_nan and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(values).all():
            n_bad = int((~np.isfinite(values)).sum())
            raise DataError(f"{what} {path} holds {n_bad} NaN or infinite values; fix or mask them before running vent")
    return image


def read_dicom_series(folder: Path, what: str = "image") -> sitk.Image:
    """The one DICOM series in ``folder`` as a 3D image (GDCM through SimpleITK: slices sorted by position, the
    rescale slope and intercept applied, so a CT comes out in HU).

    GDCM switches the process's C locale to "C" while it parses (LC_CTYPE included, which makes Python's default
    text encoding ASCII afterwards); the locale is put back as it was.

    Raises:
        DataError: the folder holds no DICOM series, or several (each listed with its UID, description and number of
            files, so the user can give one series per folder), or the series cannot be read.
    """
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _read_one_series(folder, what)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _read_one_series(folder: Path, what: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{what} {folder} is a folder without a DICOM series; give an image file or a DICOM folder")
    if len(series) > 1:
        listed = "; ".join(_series_summary(folder, uid) for uid in series)
        raise DataError(
            f"{what} {folder} holds {len(series)} DICOM series ({listed}); put each series in its own folder and "
            "name the one to use"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as error:
        log.debug("SimpleITK could not read the series in %s: %s", folder, error)
        raise DataError(f"{what} {folder}: the DICOM series {series[0]} could not be read ({len(files)} files); "
                        "export it again") from None


def _series_summary(folder: Path, uid: str) -> str:
    """``UID 'description' (N files)`` of one series in ``folder``, for an error message."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    header = sitk.ImageFileReader()
    header.SetFileName(files[0])
    header.LoadPrivateTagsOff()
    header.ReadImageInformation()
    description = header.GetMetaData("0008|103e").strip() if header.HasMetaDataKey("0008|103e") else ""
    return f"{uid}{f' {description!r}' if description else ''} ({len(files)} files)"


def read_header(path: Path) -> sitk.ImageFileReader | sitk.Image:
    """The header of an image file (no voxels read: ``GetSize``, ``GetSpacing``, ``GetOrigin``, ``GetDirection``,
    ``GetDimension``), or the image of a DICOM series folder (read whole: a series' slice count and spacing come from
    all its files).

    Raises:
        DataError: the file is missing or not an image SimpleITK reads; the message names it.
    """
    path = Path(path)
    if path.is_dir():
        return read_image(path, "image")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DataError(
            f"{path} could not be read by SimpleITK: it is missing, corrupt or not in a supported format (.mha, "
            ".mhd, .nii, .nii.gz, .nrrd, or a DICOM series folder). Copy or export the file again, or leave the "
            "subject out with data.exclude"
        ) from None
    return reader


def read_lung_mask(path: Path, what: str = "lung mask") -> tuple[sitk.Image, str | None]:
    """Read a lung mask and apply the mask rule of ``vent.io.checks.check_lung_mask`` (lung = value > 0).

    Returns:
        The image as stored, and a warning for left/right labels {0, 1, 2} (None for a binary mask).

    Raises:
        DataError: the file is unreadable, truncated, or not a plausible lung mask; the message names it.
    """
    image = read_image(path, what)
    return image, check_lung_mask(sitk.GetArrayViewFromImage(image), Path(path))


def read_ct(path: Path, what: str = "CT image", lung_mask: sitk.Image | None = None) -> sitk.Image:
    """Read a CT image and check that its values are plausible Hounsfield units (``check_ct_intensities``).

    Args:
        path: the CT file.
        what: what the file is, for the message.
        lung_mask: the lung mask on the same grid (from ``read_lung_mask``), for the median-HU-in-lung check.

    Raises:
        DataError: the file is unreadable, truncated, holds NaN, or implausible HU; the message names it.
    """
    image = read_image(path, what)
    lung = None if lung_mask is None else sitk.GetArrayViewFromImage(lung_mask)
    check_ct_intensities(sitk.GetArrayViewFromImage(image), Path(path), lung)
    return image


def _nifti_data_bytes(header: bytes) -> int | None:
    """``vox_offset + voxels * bytes per voxel`` from a NIfTI-1 or NIfTI-2 header; None if it is neither."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            offset = int(struct.unpack(f"{order}f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            bitpix = struct.unpack(f"{order}h", header[14:16])[0]
            dims = struct.unpack(f"{order}8q", header[16:80])
            offset = struct.unpack(f"{order}q", header[168:176])[0]
            break
    else:
        return None
    n_dims = min(max(int(dims[0]), 0), 7)
    return max(offset, 0) + math.prod(max(int(d), 1) for d in dims[1 : n_dims + 1]) * max(int(bitpix), 0) // 8


def _check_nifti_complete(path: Path, what: str) -> None:
    """Raise DataError when a NIfTI file holds fewer bytes than its header promises.

    SimpleITK reads a truncated ``.nii`` or ``.nii.gz`` without complaint and fills the missing voxels with zeros, so
    the file's length (decompressed, for ``.nii.gz``) is compared with the header's data size.
    """
    truncated = f"{what} {path} is truncated"
    if path.name.lower().endswith(".gz"):
        n_bytes, header = 0, b""
        try:
            with gzip.open(path, "rb") as handle:
                while block := handle.read(1 << 22):
                    if len(header) < 540:
                        header += block[: 540 - len(header)]
                    n_bytes += len(block)
        except (EOFError, OSError, zlib.error):
            raise DataError(f"{truncated} (its gzip stream ends early); copy or export the file again") from None
    else:
        n_bytes = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(540)
    expected = _nifti_data_bytes(header)
    if expected is not None and n_bytes < expected:
        raise DataError(
            f"{truncated}: it holds {n_bytes} bytes but its header describes {expected}; copy or export the file again"
        )


def make_isotropic_grid(reference: Grid, spacing_mm_xyz: tuple[float, float, float]) -> Grid:
    """A grid with the reference's origin corner, direction and physical extent, at a new spacing.

    The new size is ceil(size * old_spacing / new_spacing) per axis, so the physical extent is covered. The origin is
    moved so that the first voxel's *edge* (not centre) coincides with the reference's first voxel edge.
    """
    size = []
    origin_shift_index = []
    for n, old, new in zip(reference.size_xyz, reference.spacing_mm_xyz, spacing_mm_xyz):
        size.append(max(1, int(math.ceil(n * old / new - 1e-6))))
        origin_shift_index.append((new - old) / (2.0 * old))  # in old-voxel units
    ref_image = reference.reference_image()
    origin = ref_image.TransformContinuousIndexToPhysicalPoint(origin_shift_index)
    return Grid(
        size_xyz=tuple(size),
        spacing_mm_xyz=tuple(float(s) for s in spacing_mm_xyz),
        origin_mm_xyz=tuple(float(v) for v in origin),
        direction=reference.direction,
    )


MASK_LEVEL = 0.5 - 1e-4
"""Level at which a linearly resampled 0/1 mask is inside. A 2 mm plane midway between two 5 mm slices gets exactly
0.5; 1e-4 below it keeps that tie inside whatever the float32 rounding of the grids' origins (NIfTI stores them as
float32: a 1e-5 mm shift otherwise flipped about 2% of a phase mask between a DICOM and a NIfTI copy of one case)."""


def resample_to_grid(image: sitk.Image, grid: Grid, interpolation: str = "linear", default: float = 0.0) -> np.ndarray:
    """Resample ``image`` onto ``grid`` in physical space and return the (z, y, x) array.

    Args:
        image: the source image (any grid, any direction).
        grid: the target grid.
        interpolation: "linear" for intensities, "mask" for binary masks (linear interpolation of the 0/1 mask,
            then >= 0.5 (``MASK_LEVEL``), which keeps partial-volume fractions honest when downsampling), "nearest"
            for labels.
        default: value outside the source image.
    Returns:
        float32 array for "linear", uint8 for "mask" and "nearest".
    """
    reference = grid.reference_image()
    if interpolation == "linear":
        out = sitk.Resample(
            sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32
        )
        return sitk.GetArrayFromImage(out).astype(np.float32, copy=False)
    if interpolation == "mask":
        binary = sitk.Cast(image > 0, sitk.sitkFloat32)
        out = sitk.Resample(binary, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return (sitk.GetArrayFromImage(out) >= MASK_LEVEL).astype(np.uint8)
    if interpolation == "nearest":
        out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, default)
        return sitk.GetArrayFromImage(out).astype(np.uint8)
    raise ValueError(f"unknown interpolation {interpolation!r}; use 'linear', 'mask' or 'nearest'")


def image_from_array(array_zyx: np.ndarray, grid: Grid) -> sitk.Image:
    """Wrap a (z, y, x) array as a SimpleITK image on ``grid`` (for writing NIfTI/MHA)."""
    if tuple(array_zyx.shape) != grid.shape_zyx:
        raise ValueError(f"array shape {array_zyx.shape} does not match grid shape {grid.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    image.SetSpacing(grid.spacing_mm_xyz)
    image.SetOrigin(grid.origin_mm_xyz)
    image.SetDirection(grid.direction)
    return image
