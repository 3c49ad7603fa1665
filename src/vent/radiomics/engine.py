"""Voxel-wise (filtering) and ROI-wide (IBSI segment mode) computation of the 56 features.

Design (CPU default, :mod:`vent.radiomics._numba_engine`): centres are sorted into lines of equal (z, y) and the
13^3 kernel box slides along x; per step one slab of 13 x 13 voxels leaves and one enters, and only integer state
changes: GLCM counts (upper triangle) with a bitmap of the non-zero cells, the marginals p_x, p_{x+y}, p_{x-y}
summed from those cells per centre; GLRLM run-length tables with their
marginals (a run crossing the slab changes length by one, runs in the slab plane leave or enter whole, run extents
from precomputed per-direction run positions clipped by the box faces); the sorted multiset of raw values (slabs
sorted once on entry, merged in and out). Features are evaluated per centre from that state in a fixed order, so
results are bit-identical whatever the block size, worker count or centre order. Lines run in parallel (``prange``,
longest first, chunk size 1). The torch engine (:mod:`vent.radiomics._torch_engine`, dense per-centre matrices) is
the GPU path; on the CPU it is ~225 ms per centre, so ``auto`` picks it only when CUDA is available.

Memory and per-call cost: each call copies and checks only the centres' bounding box plus the kernel radius (float64
values, int32 grey levels with 0 outside the kernel mask, 2 x 13 bytes of run positions per voxel), never the whole
image, so the radiomics stage's pattern (one call per block of 16384 lung voxels and per phase) pays no per-call
whole-image cost and needs no per-phase preparation object.

Measured on this project's 2-core CPU box (shared with other jobs), single-thread CPU time per centre, 13^3 kernel,
64 bins, 3000 consecutive lung centres (LUNG1-001 at 2 mm unless stated); each step kept only if it paid:

* previous engine (GLRLM recomputed per centre, GLCM with a histogram of cell counts): 294-297 us.
* sliding GLRLM: 184 us (GLRLM per-centre recompute was ~140 us; results equal to 1e-15).
* GLCM without the per-pair histogram of cell counts (it cost ~107 us of a 139 us slab update, its running maximum
  another ~50 us): upper triangle only, joint energy / entropy / maximum from one pass over the present rows at
  evaluation: GLCM slab updates 28 us, GLCM evaluation 24 us; all features 103 us (incl. per-call work).
* run positions laid out (Z, Y, X, 13) and box-face distances per line: GLRLM slab updates 25.7 -> 17.4 us;
  entering slabs kept sorted in a ring (no re-gather / re-sort when they leave): sorted merges 17.8 -> 13.6 us.
* branch-free evaluation pass with sum P^2 in integers: GLCM evaluation 24.5 -> 14 us; branch-free pair update
  (min / max of the two levels; the order is unpredictable): GLCM slab updates 29 -> 21 us; a gap in a line
  resets the state instead of removing the slabs one by one.
* final, synthetic full-size patient (phase 4, 3000 centres): ~79-82 us, of which GLCM slab updates ~26, GLCM
  evaluation ~15, GLRLM slab updates ~16, GLRLM evaluation ~5, sorted merges ~13, intensity evaluation ~7.

Measured and left out: per-pair fixed-point sums of P log2 P (GLCM slab updates 29 -> 144 us) or with the
branch-free update (+7 us updates, -3.5 us evaluation); branch-free merges with +inf sentinels (13 -> 18 us);
branch-free GLRLM updates (17.4 -> 21.7 us); a bounds-test-free inner-voxel loop for the GLCM slab (29 -> 40 us);
int16 GLCM counts / int32 marginals (no change); fastmath on the evaluation (-6 %, but values move by up to
2e-10 relative). A one-pass merge (one slab out, one in) saved only 0.4 us but is kept.

Real CT (issue 12 item 3; ``bench_radiomics.py --real``: LUNG1-001 made to breathe by ``vent.synth.from_ct``, 10
phases, per-phase masks, 2 mm). Its texture does not cost more than the synthetic patient's: ~43 grey levels present
per kernel (synthetic ~39-44), 83-89 % boundary kernels (synthetic 44-58 %; they hold fewer voxels, mean mask share
0.75-0.81 against 0.88-0.92), 20-32 consecutive centres per x-run (41-70; 2.40 against 2.32 slab steps per centre),
no empty kernel in any phase; the same-process time ratio real / synthetic was 0.7-1.07 in every run (0.92 in the
last, 2 workers). Where the time went, 1 thread, real CT (machine loaded by other jobs, so ~2x the idle figures
above; CPU time, min of 30 alternating runs): GLCM slab updates 55 us, GLRLM slab updates 29, GLCM evaluation 25,
sorted merges and box moves 14, intensity 7, GLRLM evaluation 4, of 104. Only ~24 % of the GLCM triangle's cells
are non-zero. Changes, each bit-identical to the previous engine
(``tests/radiomics/test_radiomics_previous_engine.py``):

* GLCM: the slab's grey levels are copied into a plane with a zero border, so the pair loop (directions outer) has no
  bounds test and no mask branch (level 0 lands in the unread row 0); a pair changes its cell and sets its bit only,
  and the evaluation walks the set bits (non-zero cells, ascending: the order of the dense pass, zeros skipped) to
  sum the marginals and the cells. GLCM slab updates 55-59 -> 37-40 us; evaluation 25-27 -> 22-25 us.
* intensity: two passes instead of four, the robust sums over the index range [P10, P90] of the sorted values.
* measured and left out: the marginals summed over the dense triangle per centre (evaluation 22 -> 60 us in a
  micro-benchmark: three scattered stores per cell, not vectorised by numba); the plane-based pair loop that still
  updates the marginals per pair (no gain over the branchy one); a flat-index pair loop and the directions in the
  inner loop (no gain, resp. +25 %).
* result, same process: 1 thread 103.9 -> 89.3 us (real, 1.16x), 112.6 -> 90.6 us (synthetic, 1.24x); 2 workers
  1.20x (real) and 1.22x (synthetic).

Measured and left out later (2026-12-03, LUNG1-001 made to breathe, 300,276 lung voxels, one phase per task):

* int16 GLCM and run-length tables (half the cache per worker; a 13^3 box's cells stay below 2 x 2197): two
  phase tasks at once (2 numba threads each) took 42.2 / 40.9 and 45.0 / 43.5 s before, 43.2 / 41.1 and 42.9 /
  42.9 s after: no gain.
* rebuilding the box instead of sliding it across a gap when that needs fewer slab updates (a gap of 7-12 voxels
  in a line): 2.398 -> 2.391 slab updates per centre, not worth a branch. The line starts (10,071 per phase, 13
  slab updates each) are ~18 % of all slab updates: a traversal that carried the box from line to line in y
  (serpentine) could save at most that, of the ~70 % of the time that slab updates take.

Kept later (2026-12-03, same case; CPU time of one thread, two blocks of 8192 consecutive lung centres of phase 4,
old and new engine alternating in one process, min of 9; values bit-identical): 117.9 -> 106.2 us per centre.

* GLRLM slab update: which end of its line a crossing voxel is follows from the face the slab is on (entering with
  dx = +1 or leaving with dx = -1: the last voxel, L = B; otherwise the first, L = F), so no test on the data picks
  the formula; a run of length 1 moves through column 0 of the table, which nothing reads, and N_r is summed from
  r_j per centre. GLRLM slab updates ~37 -> ~29 us.
* entering slab sorted by grey level first (a counting sort; the levels are a discretisation of the values, so
  each value lands a few places from its final one) and then by an insertion sort: 1.8 instead of 6.4 us for a slab
  of 137 values; box moves and merges 19.2 -> 14.9 us.
* measured and left out: add and remove loops of the GLCM slab update split (no ``if s > 0`` per pair): 0.98-1.04x
  in the whole engine; the diagonal cell read directly instead of found among the set bits: 1.02-1.05x slower.

End-to-end figures (ratio to pyradiomics, full 10-phase patient, peak RSS): ``scripts/bench_radiomics.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numba
import numpy as np

from vent.errors import ConfigError, DataError
from vent.radiomics import _numba_engine as nb
from vent.radiomics.features import FEATURE_IDS, feature_indices
from vent.radiomics.settings import FilterSettings

logger = logging.getLogger(__name__)

#: Largest grey-level count the voxel engines accept (memory per worker grows as 13 Ng^2).
MAX_GREY_LEVELS = 1024


def _validate_inputs(image_zyx: np.ndarray, grey_zyx: np.ndarray, mask_zyx: np.ndarray, n_grey: int) -> None:
    if image_zyx.ndim != 3:
        raise DataError(f"image_zyx must be 3-D (Z, Y, X), got shape {image_zyx.shape}.")
    if grey_zyx.shape != image_zyx.shape or mask_zyx.shape != image_zyx.shape:
        raise DataError(
            f"image {image_zyx.shape}, grey {grey_zyx.shape} and mask {mask_zyx.shape} must share one grid; "
            "resample them onto the image grid first."
        )
    if n_grey < 1 or n_grey > MAX_GREY_LEVELS:
        raise ConfigError(
            f"n_grey must be in 1..{MAX_GREY_LEVELS}, got {n_grey}; discretise with a bin count (e.g. 64) first."
        )


def _masked_grey(grey_zyx: np.ndarray, kmask: np.ndarray, n_grey: int) -> np.ndarray:
    """Grey levels as int32 with 0 outside the kernel mask; DataError if a level inside lies outside 1..n_grey."""
    grey = np.where(kmask, grey_zyx, 0).astype(np.int32)
    if kmask.any():
        low, high = int(grey_zyx[kmask].min()), int(grey_zyx[kmask].max())
        if low < 1 or high > n_grey:
            raise DataError(
                f"grey levels inside the kernel mask must lie in 1..{n_grey} (got {low}..{high}); "
                "use vent.radiomics.discretise, and with masked_kernel=False discretise the whole image."
            )
    return np.ascontiguousarray(grey)


def _crop_arrays(
    image_zyx: np.ndarray,
    grey_zyx: np.ndarray,
    mask_zyx: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    n_grey: int,
    masked_kernel: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 raw values and the masked int32 grey levels of the box [low, high) only.

    Only the box is copied or checked, so the per-call cost scales with the centres' bounding box plus the kernel
    radius, not with the image (the pipeline calls the engine once per block of centres and phase).

    Returns:
        (values, grey): values (z, y, x) float64 with 0 outside the kernel mask; grey (z, y, x) int32, 1..n_grey in
        the kernel mask and 0 outside it (the engines read the mask from grey != 0).
    """
    crop = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))
    if masked_kernel:
        kmask = np.asarray(mask_zyx[crop], dtype=np.bool_)
    else:
        kmask = np.ones(tuple(int(hi - lo) for lo, hi in zip(low, high)), dtype=np.bool_)
    grey = _masked_grey(grey_zyx[crop], kmask, n_grey)
    values = np.where(kmask, image_zyx[crop], 0.0).astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError("image_zyx holds NaN or infinite values inside the kernel mask; fill or mask them first.")
    return np.ascontiguousarray(values), grey


def _resolve_backend(settings: FilterSettings) -> str:
    if settings.backend != "auto":
        return settings.backend
    try:
        import torch

        if torch.cuda.is_available():
            return "torch"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "numba"


def _sort_centres(centres_zyx: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    centres = np.asarray(centres_zyx)
    if centres.ndim != 2 or centres.shape[1] != 3 or not np.issubdtype(centres.dtype, np.integer):
        raise DataError(f"centres_zyx must be an integer array of shape (n, 3), got {centres.dtype} {centres.shape}.")
    centres = centres.astype(np.int64)
    if len(centres) and (np.any(centres < 0) or np.any(centres >= np.array(shape))):
        raise DataError(f"centres_zyx holds points outside the image of shape {shape}.")
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0]))
    return np.ascontiguousarray(centres[order]), order


def _line_starts(sorted_centres: np.ndarray) -> np.ndarray:
    if len(sorted_centres) == 0:
        return np.zeros(1, dtype=np.int64)
    zy = sorted_centres[:, 0] * (sorted_centres[:, 1].max() + 1) + sorted_centres[:, 1]
    breaks = np.flatnonzero(np.diff(zy) != 0) + 1
    return np.concatenate([[0], breaks, [len(sorted_centres)]]).astype(np.int64)


def _numba_all_features(
    values: np.ndarray,
    grey: np.ndarray,
    sorted_centres: np.ndarray,
    radius: int,
    n_grey: int,
    back: np.ndarray | None = None,
    fwd: np.ndarray | None = None,
) -> np.ndarray:
    """All 56 features (float64) for sorted centres, one call of the parallel numba kernel.

    ``grey`` is 0 outside the kernel mask; ``back``/``fwd`` from :func:`run_position_arrays` (computed if None).
    """
    shape = values.shape
    kernel_edge = 2 * radius + 1
    box_voxels = min(kernel_edge, shape[0]) * min(kernel_edge, shape[1]) * min(kernel_edge, shape[2])
    count_cap = 2 * min(box_voxels, int(np.count_nonzero(grey))) + 2
    lmax = int(min(kernel_edge, max(shape)))
    out = np.full((len(sorted_centres), nb.N_ALL), np.nan, dtype=np.float64)
    if len(sorted_centres):
        if back is None or fwd is None:
            back, fwd = run_position_arrays(grey, lmax)
        line_starts = _line_starts(sorted_centres)
        longest_first = np.argsort(-np.diff(line_starts), kind="stable")
        with numba.parallel_chunksize(1):  # lines go to whichever thread is free
            nb.compute_lines(sorted_centres, line_starts, longest_first, grey, values, back, fwd, radius, n_grey,
                             lmax, nb.clogc_table(count_cap), out)
    return out


def run_position_arrays(grey: np.ndarray, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Run voxels before / after each voxel along each of the 13 directions, (Z, Y, X, 13) each.

    Args:
        grey: Grey levels (Z, Y, X) int32, 0 outside the kernel mask.
        lmax: Longest run a kernel box can hold; uint8 is used when it fits (values saturate, which is exact
            because every use takes the minimum with the distance to the box face).

    Returns:
        (back, fwd), see :func:`vent.radiomics._numba_engine.run_positions`.
    """
    dtype = np.uint8 if lmax < 255 else np.uint16
    back = np.empty(grey.shape + (13,), dtype=dtype)
    fwd = np.empty(grey.shape + (13,), dtype=dtype)
    nb.run_positions(grey, nb.DIRECTIONS_ZYX, back, fwd)
    return back, fwd


def compute_voxel_features(
    image_zyx: np.ndarray,
    grey_zyx: np.ndarray,
    mask_zyx: np.ndarray,
    centers_zyx: np.ndarray,
    n_grey: int,
    settings: FilterSettings,
    feature_ids: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Voxel-wise features: the 56 (or the chosen) features of the kernel around each centre.

    The kernel of a centre is the box of ``settings.kernel_voxels``^3 voxels around it, clipped to the image and,
    with ``settings.masked_kernel``, intersected with ``mask_zyx``. Intensity features use the raw values of
    ``image_zyx`` in the kernel; GLCM and GLRLM features use ``grey_zyx`` (symmetric GLCM at distance 1, 13
    directions averaged, empty directions left out). A kernel with no voxel gives NaN. Centres may lie outside
    the mask.

    Args:
        image_zyx: Raw image (Z, Y, X), e.g. HU; finite inside the kernel mask.
        grey_zyx: Grey levels (Z, Y, X), int, 1..n_grey inside the mask (see :func:`discretise`).
        mask_zyx: ROI mask (Z, Y, X), bool.
        centers_zyx: Kernel centres, int (n, 3) voxel indices (z, y, x).
        n_grey: ROI-wide number of grey levels Ng (used by IDMN and IDN).
        settings: Kernel, dtype, backend, workers and block size.
        feature_ids: Ids to return (default all 56, Table 1 order).
        progress: Called with the number of centres finished since its last call.

    Returns:
        Features (n_centres, n_features) in ``settings.dtype``, columns in the order of ``feature_ids``.

    Raises:
        DataError: Inconsistent shapes, centres outside the image, grey levels out of range, non-finite values.
        ConfigError: Unknown feature id or too many grey levels.
    """
    image_zyx = np.asarray(image_zyx)
    grey_zyx = np.asarray(grey_zyx)
    mask_zyx = np.asarray(mask_zyx)
    _validate_inputs(image_zyx, grey_zyx, mask_zyx, n_grey)
    columns = feature_indices(feature_ids)
    sorted_centres, order = _sort_centres(centers_zyx, image_zyx.shape)
    backend = _resolve_backend(settings)
    result = np.empty((len(sorted_centres), len(columns)), dtype=settings.dtype)
    radius = settings.kernel_radius
    if len(sorted_centres) == 0:
        return result
    # Work on the centres' bounding box plus the kernel radius only: no kernel reaches beyond it.
    low = np.maximum(sorted_centres.min(axis=0) - radius, 0)
    high = np.minimum(sorted_centres.max(axis=0) + radius + 1, image_zyx.shape)
    values, grey = _crop_arrays(image_zyx, grey_zyx, mask_zyx, low, high, n_grey, settings.masked_kernel)
    sorted_centres = sorted_centres - low
    logger.debug("voxel features: %d centres, backend %s, kernel %d, box %s", len(sorted_centres), backend,
                 settings.kernel_voxels, grey.shape)
    if backend == "torch":
        from vent.radiomics import _torch_engine

        kmask = grey != 0

        def compute_block(block: np.ndarray) -> np.ndarray:
            return _torch_engine.all_features(values, grey, kmask, block, radius, n_grey)
    else:
        lmax = int(min(2 * radius + 1, max(grey.shape)))
        back, fwd = run_position_arrays(grey, lmax)

        def compute_block(block: np.ndarray) -> np.ndarray:
            return _numba_all_features(values, grey, block, radius, n_grey, back, fwd)

    previous_threads = numba.get_num_threads()
    n_threads = min(settings.n_workers or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(max(1, n_threads))
    try:
        for start in range(0, len(sorted_centres), settings.block_size):
            block = sorted_centres[start:start + settings.block_size]
            result[start:start + len(block)] = compute_block(block)[:, columns]
            if progress is not None:
                progress(len(block))
    finally:
        numba.set_num_threads(previous_threads)
    unsorted = np.empty_like(result)
    unsorted[order] = result
    return unsorted


def compute_roi_features(
    image_zyx: np.ndarray,
    grey_zyx: np.ndarray,
    mask_zyx: np.ndarray,
    n_grey: int,
    feature_ids: Sequence[str] | None = None,
) -> dict[str, float]:
    """ROI-wide features (IBSI segment mode, GLCM/GLRLM "3D averaged"): one value per feature over the mask.

    Equivalent to one kernel that covers the whole image, intersected with the mask.

    Args:
        image_zyx: Raw image (Z, Y, X).
        grey_zyx: Grey levels (Z, Y, X), 1..n_grey inside the mask.
        mask_zyx: ROI mask (Z, Y, X), bool, not empty.
        n_grey: ROI-wide number of grey levels Ng.
        feature_ids: Ids to return (default all 56).

    Returns:
        {feature_id: value} in the order of ``feature_ids`` (Table 1 order by default).
    """
    image_zyx = np.asarray(image_zyx)
    mask_zyx = np.asarray(mask_zyx, dtype=bool)
    grey_zyx = np.asarray(grey_zyx)
    _validate_inputs(image_zyx, grey_zyx, mask_zyx, n_grey)
    if not mask_zyx.any():
        raise DataError("The mask is empty: no ROI to compute features on.")
    columns = feature_indices(feature_ids)
    # one kernel covering the mask's bounding box
    inside = np.argwhere(mask_zyx)
    low, high = inside.min(axis=0), inside.max(axis=0) + 1
    values, grey = _crop_arrays(image_zyx, grey_zyx, mask_zyx, low, high, n_grey, True)
    radius = int(max(grey.shape))
    centre = np.zeros((1, 3), dtype=np.int64)
    row = _numba_all_features(values, grey, centre, radius, n_grey)[0]
    return {FEATURE_IDS[k]: float(row[k]) for k in columns}
