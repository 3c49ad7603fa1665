"""Deformable registration of one CT phase onto another for CT ventilation: backends ``elastix`` and ``simpleitk``.

Convention (docs/VAMPIRE.md): fixed = end-exhale, moving = end-inhale. The transform T(x) = x + u(x) maps a point x
of the fixed (exhale) CT to the same tissue in the moving (inhale) CT, so u lives on the fixed grid and the moving CT
warped onto the fixed grid is HU_in(T(x)).

Arrays and frames, stated once: images are (z, y, x) numpy arrays on a :class:`vent.io.images.Grid` (SimpleITK and
itk both index (x, y, z): ``GetImageFromArray`` reverses the axes, and spacing, origin and direction are given in
(x, y, z)). The displacement ``u_zyx`` is (3, Z, Y, X) float32 in mm, component k along the grid's array axis k in
(z, y, x) order: the physical displacement expressed in the grid's own axes, D^T u_phys with D the direction matrix
(its columns are the physical directions of the x, y, z index axes), reordered from (x, y, z) to (z, y, x). For an
identity direction these are the physical (u_z, u_y, u_x). In this frame a voxel index i moves to i + u / spacing,
numpy gradients with the spacing give grad u, and det(I + grad u) is the same as in the physical frame (a rotation
does not change a determinant).

Both backends register a multi-resolution cubic B-spline restricted to a fixed-image mask (the exhale lung mask
dilated by ``mask_dilation_mm``, so the lung boundary, the strongest feature of lung motion, lies inside it), and both
hand back u on the fixed grid; the warped moving CT is resampled from u by the same trilinear code for both.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from vent.errors import ConfigError, DataError
from vent.io.images import Grid, image_from_array

__all__ = [
    "Registration",
    "register_phases",
    "registration_mask",
    "elastix_parameter_map",
    "physical_to_grid_frame",
    "warp_to_fixed",
]

HU_OUTSIDE = -1000.0
"""elastix's ``DefaultPixelValue`` (air, as in Par0007). vent's own warp (:func:`warp_to_fixed`) gives a point outside
the image the nearest edge value instead, so the edge of a cropped grid never brings in air that is not there."""


@dataclass
class Registration:
    """A registration of a moving CT onto a fixed grid.

    Attributes:
        displacement_zyx: u (3, Z, Y, X) float32 mm on the fixed grid, grid-frame components (module docstring).
        warped_zyx: The moving CT warped onto the fixed grid, HU_m(x + u(x)), float32 (Z, Y, X).
        seconds: Wall time of the registration (optimisation and field, not the warp).
        backend: ``elastix`` or ``simpleitk``.
        details: JSON-ready facts of the run (final metric value, threads, parameter map ...).
    """

    displacement_zyx: np.ndarray
    warped_zyx: np.ndarray
    seconds: float
    backend: str
    details: dict[str, Any] = field(default_factory=dict)


def registration_mask(lung_zyx: np.ndarray, spacing_mm_zyx, dilation_mm: float) -> np.ndarray:
    """The fixed-image mask: the lung dilated by ``dilation_mm`` (Euclidean, in mm, so anisotropic grids dilate evenly).

    M = {x : d(x, lung) <= dilation_mm}, d the Euclidean distance transform with the grid's spacing. The dilation puts
    the lung boundary (lung against chest wall and diaphragm, where the motion shows best) inside the sampled region.

    Returns:
        uint8 (Z, Y, X).
    """
    lung = np.asarray(lung_zyx) > 0
    if dilation_mm <= 0 or not lung.any():
        return lung.astype(np.uint8)
    distance = ndimage.distance_transform_edt(~lung, sampling=spacing_mm_zyx)
    return (distance <= dilation_mm).astype(np.uint8)


def physical_to_grid_frame(field_zyx3: np.ndarray, direction: tuple[float, ...]) -> np.ndarray:
    """A displacement field as SimpleITK/itk give it, (Z, Y, X, 3) physical (x, y, z) mm, in the grid frame.

    u_grid = D^T u_phys (D: 3x3 direction, columns = index axes), then components reordered to (z, y, x).

    Returns:
        float32 (3, Z, Y, X).
    """
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    local_xyz = np.einsum("ji,...j->i...", matrix, np.asarray(field_zyx3, dtype=np.float64))
    return np.ascontiguousarray(local_xyz[::-1], dtype=np.float32)


def warp_to_fixed(moving_zyx: np.ndarray, displacement_zyx: np.ndarray, spacing_mm_zyx) -> np.ndarray:
    """The moving image resampled at x + u(x) for every voxel x of the fixed grid (both on the same grid).

    I_w(i) = I_m(i + u(i) / s), trilinear; points outside the moving image take its nearest edge value.

    Args:
        moving_zyx: (Z, Y, X) moving image on the grid.
        displacement_zyx: (3, Z, Y, X) u in mm, grid frame.
        spacing_mm_zyx: The grid spacing (z, y, x) in mm.
    """
    spacing = np.asarray(spacing_mm_zyx, dtype=np.float32).reshape(3, 1, 1, 1)
    sample_at = np.indices(moving_zyx.shape, dtype=np.float32) + displacement_zyx / spacing
    return ndimage.map_coordinates(np.asarray(moving_zyx, dtype=np.float32), sample_at, order=1, mode="nearest")


class RegistrationError(DataError):
    """A registration that failed on a case's images (the message gives the library's reason and what to change)."""


def register_phases(
    fixed_zyx: np.ndarray, moving_zyx: np.ndarray, fixed_mask_zyx: np.ndarray, grid: Grid, params: Any,
    threads: int | None = None,
) -> Registration:
    """Register ``moving`` onto ``fixed`` (both on ``grid``) with ``params.backend``; see the module docstring.

    Args:
        fixed_zyx: Fixed CT (HU), e.g. the exhale phase.
        moving_zyx: Moving CT (HU), e.g. the inhale phase.
        fixed_mask_zyx: Where the metric is sampled (:func:`registration_mask`).
        grid: The grid of all three.
        params: A ``vent.models.registry.RegistrationParams``.
        threads: CPU threads (``execution.threads``); None = the library's default (all cores).

    Raises:
        ConfigError: The elastix backend is asked for but itk-elastix cannot be imported (never a silent fallback).
    """
    register = {"elastix": _register_elastix, "simpleitk": _register_simpleitk}[params.backend]
    if params.backend == "elastix":
        _import_itk()  # itk loads lazily (seconds): not part of the registration's time
    started = time.perf_counter()
    displacement, details = register(fixed_zyx, moving_zyx, fixed_mask_zyx, grid, params, threads)
    seconds = time.perf_counter() - started
    warped = warp_to_fixed(moving_zyx, displacement, grid.spacing_mm_zyx)
    return Registration(displacement, warped, seconds, params.backend, {**details, "threads": threads})


def _pyramid_factors(resolutions: int) -> list[int]:
    """Downsampling factor per level, coarse to fine, halving each level: 8, 4, 2, 1 for four levels."""
    return [2 ** (resolutions - 1 - level) for level in range(resolutions)]


def elastix_parameter_map(params: Any) -> dict[str, list[str]]:
    """The elastix parameter map of a ``RegistrationParams`` (strings, as elastix reads them).

    Modelled on the elastix model zoo's lung maps, Par0011 (EMPIRE10, Staring et al. 2010, ``bspline1_s``) and
    Par0007 (4DCT inhale/exhale, Ding et al., ``MI.Coarse.Bspline_tuned``):

    - Par0011: ``MultiMetricMultiResolutionRegistration`` with ``AdvancedNormalizedCorrelation`` plus
      ``TransformBendingEnergyPenalty`` at a relative weight (``UseRelativeWeights``; Par0011 0.05, vent's default
      ``bending_weight`` 0.5, see ``RegistrationParams``; 0 drops the penalty); ``AdaptiveStochasticGradientDescent``
      with ``AutomaticParameterEstimation`` and ``UseAdaptiveStepSizes``; ``RandomCoordinate`` sampling with new
      samples every iteration and 2000 samples (``spatial_samples``); ``ErodeMask false``; ``UseDirectionCosines``.
    - Par0011 and Par0007: recursive image pyramids halving the resolution per level, a final B-spline grid of 10 mm
      (``grid_spacing_mm``) whose spacing halves per level (``GridSpacingSchedule`` 8 4 2 1 for four levels),
      ``Compose``, linear (order 1) B-spline interpolation while optimising.
    - Par0007: ``DefaultPixelValue -1000`` (air outside the image); 500 iterations per level (vent: 250).
    - vent's own: ``ASGDParameterEstimationMethod DisplacementDistribution`` (Qiao et al. 2016, IEEE TMI 35:2295)
      instead of the original step-size estimation, which spent 13 of 20 s computing Jacobian terms at the finest
      level of a 4 mm lung (measured); four levels, not Par0011's five for 0.7 mm scans, on the 2 mm analysis grid;
      ``RandomSeed`` from ``params.seed``; no result image (vent warps the moving CT itself from the field).
    """
    factors = _pyramid_factors(params.resolutions)
    penalised = params.bending_weight > 0
    metric = {
        "Registration": ["MultiMetricMultiResolutionRegistration" if penalised else "MultiResolutionRegistration"],
        "Metric": ["AdvancedNormalizedCorrelation", "TransformBendingEnergyPenalty"] if penalised else
        ["AdvancedNormalizedCorrelation"],
    }
    if penalised:
        metric |= {"UseRelativeWeights": ["true"], "Metric0RelativeWeight": ["1.0"],
                   "Metric1RelativeWeight": [repr(float(params.bending_weight))]}
    return {
        "FixedInternalImagePixelType": ["float"], "MovingInternalImagePixelType": ["float"],
        "FixedImageDimension": ["3"], "MovingImageDimension": ["3"], "UseDirectionCosines": ["true"],
        **metric,
        "FixedImagePyramid": ["FixedRecursiveImagePyramid"], "MovingImagePyramid": ["MovingRecursiveImagePyramid"],
        "NumberOfResolutions": [str(params.resolutions)],
        "ImagePyramidSchedule": [str(f) for f in factors for _ in range(3)],
        "Transform": ["BSplineTransform"], "HowToCombineTransforms": ["Compose"],
        "FinalGridSpacingInPhysicalUnits": [repr(float(params.grid_spacing_mm))] * 3,
        "GridSpacingSchedule": [repr(float(f)) for f in factors],
        "Optimizer": ["AdaptiveStochasticGradientDescent"], "AutomaticParameterEstimation": ["true"],
        "ASGDParameterEstimationMethod": ["DisplacementDistribution"], "UseAdaptiveStepSizes": ["true"],
        "MaximumNumberOfIterations": [str(params.iterations)],
        "ImageSampler": ["RandomCoordinate"], "NumberOfSpatialSamples": [str(params.spatial_samples)],
        "NewSamplesEveryIteration": ["true"], "MaximumNumberOfSamplingAttempts": ["50"],
        "RandomSeed": [str(params.seed)], "ErodeMask": ["false"],
        "Interpolator": ["BSplineInterpolator"], "BSplineInterpolationOrder": ["1"],
        "Resampler": ["DefaultResampler"], "ResampleInterpolator": ["FinalBSplineInterpolator"],
        "FinalBSplineInterpolationOrder": ["1"], "DefaultPixelValue": [repr(HU_OUTSIDE)],
        "WriteResultImage": ["false"], "ResultImageFormat": ["nii"],
    }


def _import_itk() -> Any:
    """itk with the elastix module loaded; a ConfigError with the two ways out when it is missing."""
    try:
        import itk

        itk.ParameterObject  # noqa: B018  (itk loads its modules lazily: this loads elastix, or fails)
    except Exception as error:  # ImportError, or an itk without the elastix wrapping
        from vent.models.registry import REGISTRY

        keys = " and ".join(f"train.models.{s.name}.backend: simpleitk" for s in REGISTRY if s.family == "registration")
        raise ConfigError(
            f"the 'elastix' registration backend needs itk-elastix, which cannot be imported here ({error}); install "
            f"it (pip install itk-elastix) or set {keys}"
        ) from None
    return itk


def _itk_image(itk: Any, array_zyx: np.ndarray, grid: Grid) -> Any:
    """A (z, y, x) array as an itk image on ``grid`` (itk, like SimpleITK, reverses the axes)."""
    image = itk.image_from_array(np.ascontiguousarray(array_zyx))
    image.SetSpacing([float(v) for v in grid.spacing_mm_xyz])
    image.SetOrigin([float(v) for v in grid.origin_mm_xyz])
    image.SetDirection(itk.matrix_from_array(np.asarray(grid.direction, dtype=np.float64).reshape(3, 3)))
    return image


def _register_elastix(
    fixed_zyx: np.ndarray, moving_zyx: np.ndarray, mask_zyx: np.ndarray, grid: Grid, params: Any, threads: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """elastix (itk-elastix) B-spline registration; u from transformix's deformation field.

    The thread count is set as ITK's global default for the call, not through ``number_of_threads``: itk-elastix
    0.25.4 crashes (segmentation fault) with ``number_of_threads`` > 1 and the bending-energy penalty (measured).
    """
    itk = _import_itk()
    fixed = _itk_image(itk, fixed_zyx.astype(np.float32), grid)
    moving = _itk_image(itk, moving_zyx.astype(np.float32), grid)
    mask = _itk_image(itk, (np.asarray(mask_zyx) > 0).astype(np.uint8), grid)
    parameters = itk.ParameterObject.New()
    parameter_map = elastix_parameter_map(params)
    parameters.AddParameterMap({key: tuple(value) for key, value in parameter_map.items()})
    threader = itk.MultiThreaderBase
    previous = threader.GetGlobalDefaultNumberOfThreads()
    try:
        if threads is not None:
            threader.SetGlobalDefaultNumberOfThreads(int(threads))
        with tempfile.TemporaryDirectory(prefix="vent-elastix-") as scratch:  # elastix.log, deformationField.nii
            transform = _run_elastix(itk, fixed, moving, mask, parameters, Path(scratch))
            field = itk.transformix_deformation_field(moving, transform, output_directory=scratch)
    finally:
        threader.SetGlobalDefaultNumberOfThreads(previous)
    displacement = physical_to_grid_frame(itk.array_from_image(field), grid.direction)
    return displacement, {"parameter_map": parameter_map}


def _run_elastix(itk: Any, fixed: Any, moving: Any, mask: Any, parameters: Any, scratch: Path) -> Any:
    """elastix's registration, its log kept in ``scratch``; a failure becomes a RegistrationError quoting the log's
    error lines (elastix itself only says "see elastix log")."""
    try:
        _, transform = itk.elastix_registration_method(
            fixed, moving, parameter_object=parameters, fixed_mask=mask, log_to_console=False, log_to_file=True,
            output_directory=str(scratch),
        )
    except RuntimeError:
        log_file = Path(scratch, "elastix.log")  # elastix's own log in the temporary folder, not a run artifact
        lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
        reasons = [line.strip() for line in lines if "Description:" in line or "ERROR" in line.upper()][:3]
        raise RegistrationError(
            "elastix failed: " + (" | ".join(r.rstrip(".") for r in reasons) or "no reason in its log")
            + ". On a small image the coarsest of the resolutions may hold too few voxels: lower "
            "train.models.<row>.resolutions or raise spatial_samples, or use backend: simpleitk"
        ) from None
    return transform


def _register_simpleitk(
    fixed_zyx: np.ndarray, moving_zyx: np.ndarray, mask_zyx: np.ndarray, grid: Grid, params: Any, threads: int | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """SimpleITK ``ImageRegistrationMethod`` B-spline registration, multi-resolution (vent's fallback to elastix).

    ``BSplineTransformInitializer`` places a control grid of ``grid_spacing_mm * 2**(levels - 1)`` mm on the fixed
    image; ``SetInitialTransformAsBSpline(..., scaleFactors=1, 2, 4, ...)`` halves its spacing at every level, so the
    finest level has about ``grid_spacing_mm``. Correlation metric on about ``spatial_samples`` random points of the
    mask per level (seeded with ``seed + 1``), L-BFGS (``LBFGS2``, at most ``iterations`` per level), image pyramid
    shrink factors 8, 4, 2, 1 with Gaussian smoothing of half the factor (voxels).

    Differences from elastix, measured on a 4 mm real CT lung with a planted field: ITKv4 draws the samples once per
    level (elastix: new ones every iteration), so it needs about ten times more (20000 samples: 0.7-0.8 mm mean error,
    2000: 1.2 mm); its B-spline Jacobian is dense, so an evaluation costs O(parameters) per sample and it is several
    times slower; L-BFGS-B cannot follow the control grid's refinement between levels (its scales keep the first
    level's size), hence L-BFGS. SimpleITK has no bending-energy penalty: the B-spline grid alone regularises
    (``bending_weight`` is not used; the trainer records a warning).
    """
    import SimpleITK as sitk

    fixed = image_from_array(fixed_zyx.astype(np.float32), grid)
    moving = image_from_array(moving_zyx.astype(np.float32), grid)
    mask = image_from_array((np.asarray(mask_zyx) > 0).astype(np.uint8), grid)
    factors = _pyramid_factors(params.resolutions)
    extent_mm = [n * s for n, s in zip(grid.size_xyz, grid.spacing_mm_xyz)]
    coarse_mm = params.grid_spacing_mm * factors[0]
    mesh = [max(1, int(round(e / coarse_mm))) for e in extent_mm]
    transform = sitk.BSplineTransformInitializer(fixed, mesh, 3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.RANDOM)
    n_mask = max(int(np.count_nonzero(mask_zyx)), 1)
    # SimpleITK reads seed 0 as "seed from the wall clock" (sitkWallClock): seed + 1 keeps every seed reproducible
    method.SetMetricSamplingPercentagePerLevel([min(1.0, params.spatial_samples * f**3 / n_mask) for f in factors],
                                               int(params.seed) + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGS2(solutionAccuracy=1e-6, numberOfIterations=int(params.iterations))
    method.SetInitialTransformAsBSpline(transform, inPlace=True, scaleFactors=factors[::-1])
    method.SetShrinkFactorsPerLevel(factors)
    method.SetSmoothingSigmasPerLevel([f / 2.0 for f in factors])
    if threads is not None:
        method.SetNumberOfThreads(int(threads))
    final = method.Execute(fixed, moving)
    field = sitk.TransformToDisplacementField(final, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(),
                                              fixed.GetSpacing(), fixed.GetDirection())
    displacement = physical_to_grid_frame(sitk.GetArrayFromImage(field), grid.direction)
    details = {"final_metric": float(method.GetMetricValue()), "stop": method.GetOptimizerStopConditionDescription(),
               "mesh_size_coarse_xyz": mesh}
    return displacement, details
