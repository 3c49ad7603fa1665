"""CPU engine: sliding-window voxel-wise features compiled with numba.

Centres are sorted in (z, y, x) order and grouped into lines of equal (z, y). Along a line the kernel box slides one
voxel at a time in x: one slab of kernel_voxels^2 voxels leaves and one enters. All state is integer counts (or the
sorted multiset of values) that depend only on the current box, never on the path that reached it, so results do
not depend on block size, worker count or the order of centres (bit-identical). ``grey`` is 0 outside the kernel
mask, so it doubles as the mask.

* Intensity (IBSI 3.3): a sorted multiset of the raw values in the masked kernel. The entering slab is gathered and
  sorted once and kept (a ring of the box's sorted slabs), so leaving is one merge-remove and entering one
  merge-insert, O(kernel voxels) per step instead of a sort per centre. The sums take two passes (the robust ones
  over the index range [P10, P90] of the sorted values).
* GLCM (IBSI 3.6, symmetric, distance 1, 13 directions): integer co-occurrence counts, upper triangle only
  (cnt[i, j] = P(i, j) = P(j, i), i <= j), updated per pair of the leaving / entering slab from contiguous copies of
  the slab's grey levels with a zero border (:func:`_glcm_slab`, no branch), with a bitmap of the non-zero cells.
  The marginals p_x (= p_y), p_{x+y}, p_{x-y}, N, sum P^2 (exact in integers), sum P log2 P and max P come from one
  pass over the non-zero cells per direction (:func:`_glcm_cell_sums`; ~1 in 4 of the triangle on lung CT), the
  other features from the marginals in O(Ng) per direction.
* GLRLM (IBSI 3.7, 13 directions): integer run-length tables (grey level, length) with their marginals r_i and
  r_j, updated per slab (:func:`_glrlm_slab`; N_r = sum r_j per centre): for directions in the slab plane the slab's
  own runs leave or enter whole; for directions crossing it, each slab voxel is the first or last voxel of its line
  in the box (which one follows from the face), so exactly one run changes length by one (or appears /
  disappears). Run extents come from two precomputed arrays, the run
  voxels before (``back``) and after (``fwd``) each voxel per direction, laid out (Z, Y, X, 13); lengths are
  clipped by the box faces. Features come from the marginals and from the rows of levels present.

Directions with no pair (GLCM) or no run (GLRLM) in a kernel are left out of that kernel's average.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

N_INTENSITY = 18
N_GLCM = 22
N_GLRLM = 16
N_ALL = N_INTENSITY + N_GLCM + N_GLRLM

#: The 13 unique directions (dz, dy, dx) of the 26-neighbourhood at distance 1.
DIRECTIONS_ZYX = np.array(
    [[dz, dy, dx] for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dz, dy, dx) > (0, 0, 0)],
    dtype=np.int64,
)


def _slab_offsets(dx: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from a voxel of a box face slab to its GLCM partners: the 4 in-plane directions (positive, so a pair
    inside the slab is seen once) and the 9 offsets with this dx (into the box); with their direction indices."""
    in_plane = [tuple(v) for v in DIRECTIONS_ZYX if v[2] == 0]
    crossing = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1)]
    offsets = np.array(in_plane + crossing, dtype=np.int64)
    index = {tuple(v): k for k, v in enumerate(DIRECTIONS_ZYX)}
    directions = np.array([index.get(tuple(v), index.get(tuple(-v), -1)) for v in offsets], dtype=np.int64)
    return offsets, directions


#: Partner offsets of a voxel on the box's front face (x = x0, partners at dx = +1) and back face (dx = -1).
_FRONT_OFFSETS, _FRONT_DIRECTION = _slab_offsets(+1)
_BACK_OFFSETS, _BACK_DIRECTION = _slab_offsets(-1)

_JIT = dict(cache=True, nogil=True, error_model="numpy")


# ----------------------------------------------------------------------------------------------------------------
# Intensity: sorted multiset of kernel values
# ----------------------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _gather_slab(values, grey, xs, z0, z1, y0, y1, buf, level_start):
    """Sorted raw values of the masked voxels (grey != 0) of slab x = xs into buf; returns their number.

    Grey levels are a discretisation of the values, so ordering by level first (a counting sort over the levels,
    ``level_start`` (n_grey + 2,) scratch) leaves each value a few places from its final one; an insertion sort
    then finishes the order. The result is the sorted multiset whatever the levels are (the levels only make it
    fast): on lung CT ~3.6x faster than a comparison sort of the slab (137 values, 64 levels: 1.8 against 6.4 us),
    whose unpredictable comparisons dominate at this size.
    """
    level_start[:] = 0
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            level_start[grey[z, y, xs] + 1] += 1
    level_start[1] = 0  # level 0 (outside the mask) takes no place
    for g in range(2, len(level_start)):
        level_start[g] += level_start[g - 1]
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            g = grey[z, y, xs]
            if g != 0:
                buf[level_start[g]] = values[z, y, xs]
                level_start[g] += 1
    m = level_start[len(level_start) - 1]
    for i in range(1, m):
        v = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > v:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = v
    return m


@njit(**_JIT)
def _merge_insert(sv, n, add, m, out):
    """out[:n + m] = sorted union of sorted sv[:n] and sorted add[:m]; returns n + m."""
    i = 0
    j = 0
    k = 0
    while i < n or j < m:
        if j >= m or (i < n and sv[i] <= add[j]):
            out[k] = sv[i]
            i += 1
        else:
            out[k] = add[j]
            j += 1
        k += 1
    return k


@njit(**_JIT)
def _merge_remove(sv, n, rem, m, out):
    """out = sorted sv[:n] without the sorted values rem[:m] (each taken once); returns the new count."""
    i = 0
    j = 0
    k = 0
    while i < n:
        if j < m and sv[i] == rem[j]:
            j += 1
        else:
            out[k] = sv[i]
            k += 1
        i += 1
    return k


@njit(**_JIT)
def _merge_replace(sv, n, rem, m_rem, add, m_add, out):
    """out = sorted sv[:n] without the sorted values rem[:m_rem], with the sorted values add[:m_add]; one pass.

    The common sliding step (one slab leaves, one enters); returns the new count n - m_rem + m_add.
    """
    i = 0
    j = 0
    a = 0
    k = 0
    while True:
        while i < n and j < m_rem and sv[i] == rem[j]:
            i += 1
            j += 1
        if i < n and (a >= m_add or sv[i] <= add[a]):
            out[k] = sv[i]
            i += 1
        elif a < m_add:
            out[k] = add[a]
            a += 1
        else:
            break
        k += 1
    return k


@njit(**_JIT)
def _percentile_sorted(v, n, q):
    """Linear-interpolation percentile (numpy default, pyradiomics): h = (n - 1) q / 100, v[floor h] + frac."""
    h = (n - 1) * q / 100.0
    lo = int(np.floor(h))
    if lo >= n - 1:
        return v[n - 1]
    t = h - lo
    a = v[lo]
    b = v[lo + 1]
    if t >= 0.5:
        return b - (b - a) * (1.0 - t)
    return a + (b - a) * t


@njit(**_JIT)
def intensity_features_sorted(v, n, out):
    """The 18 intensity features (IBSI 3.3) of the sorted kernel values v[:n]; writes out[0:18] (NaN if n = 0).

    With mu = mean, m_k = (1/n) sum (x - mu)^k, P_q = q-th percentile (linear interpolation):
    mean Q4LE = mu; variance ECT3 = m_2; skewness KE2A = m_3 / m_2^1.5 (0 if m_2 = 0);
    excess kurtosis IPH6 = m_4 / m_2^2 - 3 (0 if m_2 = 0); median Y12H = P_50; minimum 1GSF; P10 QG58; P90 8DWT;
    maximum 84IY; interquartile range SALO = P75 - P25; range 2OJQ = max - min;
    mean absolute deviation 4FUA = (1/n) sum |x - mu|;
    robust mean absolute deviation 1128 = mean |x - mu_10-90| over x in [P10, P90];
    median absolute deviation N72L = (1/n) sum |x - P_50|; coefficient of variation 7TET = sqrt(m_2) / mu;
    quartile coefficient of dispersion 9S40 = (P75 - P25) / (P75 + P25); energy N8CA = sum x^2;
    root mean square 5ZWQ = sqrt(sum x^2 / n).
    """
    if n == 0:
        for k in range(N_INTENSITY):
            out[k] = np.nan
        return
    median = _percentile_sorted(v, n, 50.0)
    p10 = _percentile_sorted(v, n, 10.0)
    p25 = _percentile_sorted(v, n, 25.0)
    p75 = _percentile_sorted(v, n, 75.0)
    p90 = _percentile_sorted(v, n, 90.0)
    # v is sorted, so the values in [P10, P90] are the index range [lo, hi): the robust sums run over it without a
    # test per value (same values in the same order as a filtered pass, so the same result)
    lo = np.searchsorted(v[:n], p10, side="left")
    hi = np.searchsorted(v[:n], p90, side="right")
    total = 0.0
    energy = 0.0
    for i in range(n):
        total += v[i]
        energy += v[i] * v[i]
    mean = total / n
    robust_sum = 0.0
    for i in range(lo, hi):
        robust_sum += v[i]
    robust_n = hi - lo
    robust_mean = robust_sum / robust_n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    mad = 0.0
    medad = 0.0
    for i in range(n):
        d = v[i] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
        mad += abs(d)
        medad += abs(v[i] - median)
    m2 /= n
    m3 /= n
    m4 /= n
    mad /= n
    rmad = 0.0
    for i in range(lo, hi):
        rmad += abs(v[i] - robust_mean)
    out[0] = mean
    out[1] = m2
    out[2] = m3 / m2**1.5 if m2 > 0 else 0.0
    out[3] = m4 / (m2 * m2) - 3.0 if m2 > 0 else 0.0
    out[4] = median
    out[5] = v[0]
    out[6] = p10
    out[7] = p90
    out[8] = v[n - 1]
    out[9] = p75 - p25
    out[10] = v[n - 1] - v[0]
    out[11] = mad
    out[12] = rmad / robust_n
    out[13] = medad / n
    out[14] = np.sqrt(m2) / mean
    out[15] = (p75 - p25) / (p75 + p25)
    out[16] = energy
    out[17] = np.sqrt(energy / n)


# ----------------------------------------------------------------------------------------------------------------
# GLCM: incremental counts
# ----------------------------------------------------------------------------------------------------------------
@njit(**_JIT)
def _gather_plane(grey, xs, z0, z1, y0, y1, plane):
    """Copy the grey levels of slab x = xs into plane[1:-1, 1:-1] (contiguous, read by 13 directions).

    ``plane`` is (z1 - z0 + 3, y1 - y0 + 3) with a border of zeros that is never written: a partner outside the box
    reads level 0, like a partner outside the kernel mask.
    """
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            plane[z - z0 + 1, y - y0 + 1] = grey[z, y, xs]


@njit(**_JIT)
def _glcm_slab(plane, neighbour, nzb, nyb, s, offs, off_dir, cnt, occupied):
    """Add (s = +1) or remove (s = -1) every pair that has a voxel in a box face slab and both voxels in the box.

    ``plane`` is the face slab and ``neighbour`` the adjacent slab inside the box (all zeros if there is none), both
    gathered by :func:`_gather_plane` (zero border). ``offs`` (13, 3) are the 4 in-plane offsets of positive
    direction (partner in ``plane``; each pair inside the slab counted once) and the 9 offsets towards the rest of
    the box (partner in ``neighbour``); ``off_dir`` their direction index. Only the upper triangle of the symmetric
    GLCM is stored: cnt[d, i, j] = P(i, j) = P(j, i) for i <= j, so a pair adds 1 to an off-diagonal cell (whose
    mirror shares the stored value) or 2 to a diagonal cell. Bit j % 64 of occupied[d, i, j // 64] is set when a
    pair enters cell (i, j) and cleared by the evaluation when it finds the cell back at 0
    (:func:`_glcm_cell_sums`), so evaluation visits the non-zero cells (about 1 in 4 of the triangle on lung CT)
    and a few stale ones, never missing one; removing a pair touches the count only.

    Only the cell and its bit change per pair; the marginals p_x, p_{x+y}, p_{x-y} are summed from the non-zero
    cells at evaluation (:func:`_glcm_cell_sums`), which costs less than four more scattered updates for each of the
    ~4,400 pairs that change per step. The loop has no data-dependent branch: a pair with a voxel outside the kernel
    mask or the box has level 0 on that side and lands in row 0 of ``cnt``, never read. Directions run in the outer
    loop, so one direction's counts stay in L1 while its pairs are added.
    """
    for k in range(13):
        dz = offs[k, 0]
        dy = offs[k, 1]
        partner = plane if offs[k, 2] == 0 else neighbour
        d = off_dir[k]
        for zz in range(1, nzb + 1):
            for yy in range(1, nyb + 1):
                ga = plane[zz, yy]
                gb = partner[zz + dz, yy + dy]
                lo = min(ga, gb)
                hi = max(ga, gb)
                cnt[d, lo, hi] += s + s * (lo == hi)
                if s > 0:  # the same for the whole call: predicted
                    occupied[d, lo, hi >> 6] |= np.uint64(1) << np.uint64(hi & 63)


@njit(**_JIT)
def _glcm_cell_sums(d, n_grey, cnt, occupied, clogc, px, psum, pdiff):
    """One pass over the non-zero stored cells of direction d: its marginals and the cell sums.

    Fills the integer marginals (zeroed here) px[i] = sum_j P(i, j), psum[k] = sum_{i+j=k} P(i, j) and
    pdiff[k] = sum_{|i-j|=k} P(i, j), each off-diagonal stored cell standing for P(i, j) and P(j, i). Cells are
    visited row by row, columns ascending (the set bits of ``occupied``, see :func:`_glcm_slab`; a cell found at 0
    has its bit cleared and adds nothing), which is the order of a dense pass that skips zeros, so the float sums
    do not depend on which stale bits were set.

    Returns:
        (N, sum P^2, sum P log2 P, max P): N = sum P and sum P^2 exact in integers; sum P log2 P from the c log2 c
        table, per row the diagonal cell plus twice the rest of the row.
    """
    px[:] = 0
    psum[:] = 0
    pdiff[:] = 0
    total = 0
    sum_sq = 0
    sum_clogc = 0.0
    max_cell = 0
    for i in range(1, n_grey + 1):
        diagonal = 0
        row_total = 0
        row_sq = 0
        row_clogc = 0.0
        for w in range(occupied.shape[2]):
            bits = occupied[d, i, w]
            while bits != 0:
                j = 64 * w + trailing_zeros(bits)
                bits &= bits - np.uint64(1)
                c = cnt[d, i, j]
                if c == 0:  # emptied since its bit was set
                    occupied[d, i, w] &= ~(np.uint64(1) << np.uint64(j & 63))
                    continue
                if j == i:
                    diagonal = c
                    continue
                row_total += c
                px[j] += c
                psum[i + j] += 2 * c
                pdiff[j - i] += 2 * c
                row_sq += c * c
                row_clogc += clogc[c]
                max_cell = max(max_cell, c)
        if diagonal == 0 and row_total == 0:
            continue
        px[i] += diagonal + row_total
        psum[2 * i] += diagonal
        pdiff[0] += diagonal
        total += diagonal + 2 * row_total
        sum_sq += diagonal * diagonal + 2 * row_sq
        sum_clogc += clogc[diagonal]
        sum_clogc += 2.0 * row_clogc
        max_cell = max(max_cell, diagonal)
    return total, sum_sq, sum_clogc, max_cell


@njit(**_JIT)
def _glcm_direction(d, n_grey, cnt, occupied, px, psum, pdiff, clogc, out):
    """The 22 GLCM features (IBSI 3.6) of direction d from its stored cells; returns False if it has no pair.

    px, psum, pdiff are scratch arrays for the marginals (see :func:`_glcm_cell_sums`).

    p(i, j) = P(i, j) / N, N = sum P (symmetric counts); p_x(i) = sum_j p(i, j) (= p_y); mu = sum i p_x(i);
    sigma^2 = sum (i - mu)^2 p_x(i); p_{x+y}(k) = sum_{i+j=k} p; p_{x-y}(k) = sum_{|i-j|=k} p;
    HX = -sum p_x log2 p_x; HXY = -sum p log2 p; HXY1 = HXY2 = HX + HY = 2 HX.
    Written to out in Table 1 order:
      0 autocorrelation QWB0 = sum ij p = (sum k^2 p_{x+y}(k) - sum k^2 p_{x-y}(k)) / 4
      1 cluster prominence AE86 = sum (k - 2 mu)^4 p_{x+y}(k)
      2 cluster shade 7NFM = sum (k - 2 mu)^3 p_{x+y}(k)
      3 cluster tendency DG8W = sum (k - 2 mu)^2 p_{x+y}(k)
      4 contrast ACUI = sum k^2 p_{x-y}(k)
      5 correlation NI2N = sum (i - mu)(j - mu) p / sigma^2 = (tendency - contrast) / (4 sigma^2); 1 if sigma = 0
      6 difference entropy NTRS = -sum p_{x-y} log2 p_{x-y}
      7 dissimilarity 8S9J = sum k p_{x-y}(k)
      8 joint energy 8ZQL = sum p^2
      9 joint entropy TU9B = HXY
      10 inverse difference IB1Z = sum p_{x-y}(k) / (1 + k)
      11 inverse difference moment WF0Z = sum p_{x-y}(k) / (1 + k^2)
      12 information correlation 1 R8DG = (HXY - HXY1) / max(HX, HY); 0 if HX = 0
      13 information correlation 2 JN9H = sqrt(1 - exp(-2 (HXY2 - HXY))); 0 if HXY2 <= HXY
      14 normalised inverse difference moment 1QCO = sum p_{x-y}(k) / (1 + (k / Ng)^2)
      15 normalised inverse difference NDRX = sum p_{x-y}(k) / (1 + k / Ng)
      16 inverse variance E8JP = sum_{k >= 1} p_{x-y}(k) / k^2
      17 joint maximum GYBY = max p
      18 sum average ZGXS = sum k p_{x+y}(k)
      19 sum entropy P6QZ = -sum p_{x+y} log2 p_{x+y}
      20 sum variance OEEB = sum (k - SA)^2 p_{x+y}(k), SA = sum average (= 2 mu)
      21 joint variance UR99 = sigma^2
    Ng in 14 and 15 is the ROI-wide number of grey levels (pyradiomics semantics, also in voxel mode).
    """
    n, sum_sq, sum_clogc, max_cell = _glcm_cell_sums(d, n_grey, cnt, occupied, clogc, px, psum, pdiff)
    if n == 0:
        return False
    inv_n = 1.0 / n
    log_n = np.log2(n)
    # p_x: mean, variance, entropy, range of grey levels present
    mu = 0.0
    hx_acc = 0.0
    n_levels = 0
    gmin = n_grey + 1
    gmax = 0
    for i in range(1, n_grey + 1):
        c = px[i]
        if c > 0:
            mu += i * c
            hx_acc += clogc[c]
            n_levels += 1
            if i < gmin:
                gmin = i
            gmax = i
    mu *= inv_n
    hx = log_n - hx_acc * inv_n if n_levels > 1 else 0.0
    var = 0.0
    for i in range(gmin, gmax + 1):
        c = px[i]
        if c > 0:
            var += (i - mu) ** 2 * c
    var *= inv_n
    # p_{x+y}
    sum_avg = 0.0
    ct = 0.0
    cs = 0.0
    cp = 0.0
    sum_k2 = 0.0
    se_acc = 0.0
    for k in range(2 * gmin, 2 * gmax + 1):
        c = psum[k]
        if c > 0:
            p = c * inv_n
            t = k - 2.0 * mu
            t2 = t * t
            sum_avg += k * p
            ct += t2 * p
            cs += t2 * t * p
            cp += t2 * t2 * p
            sum_k2 += k * k * p
            se_acc += clogc[c]
    # p_{x-y}
    contrast = 0.0
    diss = 0.0
    de_acc = 0.0
    idf = 0.0
    idm = 0.0
    idmn = 0.0
    idn = 0.0
    inv_var = 0.0
    ng = float(n_grey)
    for k in range(0, gmax - gmin + 1):
        c = pdiff[k]
        if c > 0:
            p = c * inv_n
            contrast += k * k * p
            diss += k * p
            de_acc += clogc[c]
            idf += p / (1.0 + k)
            idm += p / (1.0 + k * k)
            idmn += p / (1.0 + (k * k) / (ng * ng))
            idn += p / (1.0 + k / ng)
            if k > 0:
                inv_var += p / (k * k)
    sum_c2 = float(sum_sq)
    single_cell = max_cell == n
    hxy = 0.0 if single_cell else log_n - sum_clogc * inv_n
    sum_entropy = 0.0 if psum[2 * gmin] == n else log_n - se_acc * inv_n
    diff_entropy = 0.0 if pdiff[0] == n else log_n - de_acc * inv_n
    out[0] = (sum_k2 - contrast) / 4.0
    out[1] = cp
    out[2] = cs
    out[3] = ct
    out[4] = contrast
    out[5] = (ct - contrast) / (4.0 * var) if n_levels > 1 else 1.0
    out[6] = diff_entropy
    out[7] = diss
    out[8] = sum_c2 * inv_n * inv_n
    out[9] = hxy
    out[10] = idf
    out[11] = idm
    out[12] = (hxy - 2.0 * hx) / hx if hx > 0 else 0.0
    mutual = 2.0 * hx - hxy
    out[13] = np.sqrt(1.0 - np.exp(-2.0 * mutual)) if mutual > 0 else 0.0
    out[14] = idmn
    out[15] = idn
    out[16] = inv_var
    out[17] = max_cell * inv_n
    out[18] = sum_avg
    out[19] = sum_entropy
    out[20] = ct
    out[21] = var
    return True


# ----------------------------------------------------------------------------------------------------------------
# GLRLM: per-centre runs
# ----------------------------------------------------------------------------------------------------------------
@njit(parallel=True, **_JIT)
def run_positions(grey, dirs, back, fwd):
    """Run voxels before and after each voxel of the kernel mask, per direction, layout (Z, Y, X, 13).

    back[v, d] = number of consecutive voxels v - d, v - 2d, ... with v's grey level (runs along d before v);
    fwd[v, d] = the same after v (v + d, ...); both 0 outside the mask (``grey`` = 0) and saturated at the
    dtype's maximum. Directions are positive in raster order, so one forward raster pass fills ``back`` and one
    backward pass fills ``fwd`` (the two passes run in parallel). The 13 directions of a voxel are contiguous, so
    the sliding GLRLM reads one cache line per voxel.
    """
    nz, ny, nx = grey.shape
    cap = np.iinfo(back.dtype).max
    for task in prange(2):
        target = back if task == 0 else fwd
        sign = -1 if task == 0 else 1
        for zi in range(nz):
            z = zi if task == 0 else nz - 1 - zi
            for yi in range(ny):
                y = yi if task == 0 else ny - 1 - yi
                for xi in range(nx):
                    x = xi if task == 0 else nx - 1 - xi
                    g = grey[z, y, x]
                    for d in range(13):
                        pz = z + sign * dirs[d, 0]
                        py = y + sign * dirs[d, 1]
                        qx = x + sign * dirs[d, 2]
                        if g != 0 and 0 <= pz < nz and 0 <= py < ny and 0 <= qx < nx and grey[pz, py, qx] == g:
                            target[z, y, x, d] = min(target[pz, py, qx, d] + 1, cap)
                        else:
                            target[z, y, x, d] = 0


@njit(**_JIT)
def _steps_in_box(c, step, lo, hi, limit):
    """Voxels from coordinate c (inclusive) to the box face [lo, hi] along one axis moving by step, capped at limit."""
    if step > 0:
        return min(limit, hi - c + 1)
    if step < 0:
        return min(limit, c - lo + 1)
    return limit


@njit(**_JIT)
def _face_steps(z0, z1, y0, y1, dirs, lmax, ahead, behind):
    """Voxels from (z, y) to the box's z/y faces along each direction, ahead (+d) and behind (-d), capped at lmax.

    Writes ahead[z - z0, y - y0, d] and behind[...]; the x faces move with the box and are added per slab.
    """
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            for d in range(13):
                ahead[z - z0, y - y0, d] = _steps_in_box(y, dirs[d, 1], y0, y1,
                                                         _steps_in_box(z, dirs[d, 0], z0, z1, lmax))
                behind[z - z0, y - y0, d] = _steps_in_box(y, -dirs[d, 1], y0, y1,
                                                          _steps_in_box(z, -dirs[d, 0], z0, z1, lmax))


@njit(**_JIT)
def _glrlm_slab(xs, s, z0, z1, y0, y1, bx0, bx1, grey, back, fwd, dirs, ahead_zy, behind_zy, table, pg, pr):
    """Update the run-length tables when slab x = xs leaves (s = -1, xs = bx0) or enters (s = +1, xs = bx1) the box.

    The box [z0, z1] x [y0, y1] x [bx0, bx1] contains the slab. Runs are maximal segments of equal grey level in
    the masked box along a direction. For a voxel v of the slab, with B(v) = min(back + 1, voxels to the box face
    behind v) and F(v) = min(fwd + 1, voxels to the face ahead):
    * directions in the slab plane (dx = 0): the runs that start in the slab (B = 1) leave or enter whole, with
      length F;
    * directions crossing the slab (dx = +-1): v is the first or the last voxel of its line inside the box, so its
      run of length L becomes L - 1 when v leaves, or was L - 1 before v entered. Which end v is follows from the
      face alone: v is the last voxel along d (one voxel to the face ahead) when the slab is the box's face ahead
      of it (entering with dx = +1, leaving with dx = -1), and then L = B; otherwise v is the first and L = F.
      (When v is both, L = 1 either way.) So no test on the data picks the formula.
    The change L -> L - 1 moves one run between columns L and L - 1 of the table and of r_j; a run of length 1
    lands in column 0, which nothing reads, instead of a test, and only then does r_i change (N_r = sum r_j is
    summed at evaluation, :func:`_glrlm_features`). Only integer counts change, so the tables depend on the box
    alone, not on how it was reached. ``grey`` is 0 outside the kernel mask; ``ahead_zy``/``behind_zy`` come from
    :func:`_face_steps` (the z/y faces; the x faces are ``width`` = bx1 - bx0 + 1 voxels apart).
    """
    width = bx1 - bx0 + 1
    entering = s > 0
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            g = grey[z, y, xs]
            if g == 0:
                continue
            for d in range(13):
                dx = dirs[d, 2]
                ahead = ahead_zy[z - z0, y - y0, d]
                behind = behind_zy[z - z0, y - y0, d]
                if dx == 0:
                    if min(int(back[z, y, xs, d]) + 1, behind) != 1:
                        continue  # the run starts before this voxel
                    length = min(int(fwd[z, y, xs, d]) + 1, ahead)
                    table[d, g, length] += s
                    pg[d, g] += s
                    pr[d, length] += s
                    continue
                if (dx > 0) == entering:  # v is the last voxel of its line in the box
                    length = min(int(back[z, y, xs, d]) + 1, min(behind, width))
                else:  # v is the first
                    length = min(int(fwd[z, y, xs, d]) + 1, min(ahead, width))
                table[d, g, length] += s
                pr[d, length] += s
                table[d, g, length - 1] -= s
                pr[d, length - 1] -= s
                pg[d, g] += s * (length == 1)


@njit(**_JIT)
def _glrlm_features(n_voxels, n_grey, lmax, table, pg, pr, clogc, out_sum):
    """Sum over the 13 directions of the 16 GLRLM features (IBSI 3.7) from the run-length tables; returns #directions.

    P(i, j) = runs of grey level i and length j; N_r = sum P; N_v = sum j P = ``n_voxels`` (every voxel of the
    masked box lies in exactly one run per direction); r_i = sum_j P(i, j); r_j = sum_i P(i, j).
    Per direction, in Table 1 order:
      0 short runs emphasis 22OV = (1/N_r) sum_j r_j / j^2     1 long runs emphasis W4KF = (1/N_r) sum_j r_j j^2
      2 grey level non-uniformity R5YN = (1/N_r) sum r_i^2     3 normalised GLNU OVBL = (1/N_r^2) sum r_i^2
      4 run length non-uniformity W92Y = (1/N_r) sum r_j^2     5 normalised RLNU IC23 = (1/N_r^2) sum r_j^2
      6 run percentage 9ZK5 = N_r / N_v
      7 low grey level run emphasis V3SW = (1/N_r) sum_i r_i / i^2
      8 high grey level run emphasis G3QZ = (1/N_r) sum_i r_i i^2
      9 short run low grey level emphasis HTZT = (1/N_r) sum P / (i^2 j^2)
      10 short run high grey level emphasis GD3A = (1/N_r) sum P i^2 / j^2
      11 long run low grey level emphasis IVPO = (1/N_r) sum P j^2 / i^2
      12 long run high grey level emphasis 3KUM = (1/N_r) sum P i^2 j^2
      13 grey level variance 8CE5 = sum (i - mu_i)^2 r_i / N_r, mu_i = sum i r_i / N_r
      14 run length variance SXLW = sum (j - mu_j)^2 r_j / N_r, mu_j = sum j r_j / N_r
      15 run entropy HJ9O = -sum (P / N_r) log2 (P / N_r) = log2 N_r - (1/N_r) sum P log2 P
    The four joint emphases and the entropy read only the rows i with r_i > 0.
    """
    for k in range(N_GLRLM):
        out_sum[k] = 0.0
    used = 0
    for d in range(13):
        runs = 0
        for j in range(1, lmax + 1):
            runs += pr[d, j]
        if runs == 0:
            continue
        used += 1
        inv_r = 1.0 / runs
        # run-length marginal r_j
        s_sre = 0.0
        s_lre = 0.0
        s_pr2 = 0.0
        mu_l = 0.0
        for j in range(1, lmax + 1):
            c = pr[d, j]
            if c > 0:
                ll = float(j) * j
                s_sre += c / ll
                s_lre += c * ll
                s_pr2 += float(c) * c
                mu_l += j * c
        mu_l *= inv_r
        var_l = 0.0
        for j in range(1, lmax + 1):
            c = pr[d, j]
            if c > 0:
                var_l += (j - mu_l) ** 2 * c
        # grey-level marginal r_i and the joint sums, row by row
        s_lgre = 0.0
        s_hgre = 0.0
        s_pg2 = 0.0
        mu_g = 0.0
        s_srlge = 0.0
        s_srhge = 0.0
        s_lrlge = 0.0
        s_lrhge = 0.0
        s_clogc = 0.0
        n_cells = 0
        for g in range(1, n_grey + 1):
            c = pg[d, g]
            if c == 0:
                continue
            gg = float(g) * g
            s_lgre += c / gg
            s_hgre += c * gg
            s_pg2 += float(c) * c
            mu_g += g * c
            row_short = 0.0
            row_long = 0.0
            for j in range(1, lmax + 1):
                cell = table[d, g, j]
                if cell > 0:
                    ll = float(j) * j
                    row_short += cell / ll
                    row_long += cell * ll
                    s_clogc += clogc[cell]
                    n_cells += 1
            s_srlge += row_short / gg
            s_srhge += row_short * gg
            s_lrlge += row_long / gg
            s_lrhge += row_long * gg
        mu_g *= inv_r
        var_g = 0.0
        for g in range(1, n_grey + 1):
            c = pg[d, g]
            if c > 0:
                var_g += (g - mu_g) ** 2 * c
        run_entropy = 0.0 if n_cells == 1 else np.log2(runs) - s_clogc * inv_r
        out_sum[0] += s_sre * inv_r
        out_sum[1] += s_lre * inv_r
        out_sum[2] += s_pg2 * inv_r
        out_sum[3] += s_pg2 * inv_r * inv_r
        out_sum[4] += s_pr2 * inv_r
        out_sum[5] += s_pr2 * inv_r * inv_r
        out_sum[6] += runs / n_voxels
        out_sum[7] += s_lgre * inv_r
        out_sum[8] += s_hgre * inv_r
        out_sum[9] += s_srlge * inv_r
        out_sum[10] += s_srhge * inv_r
        out_sum[11] += s_lrlge * inv_r
        out_sum[12] += s_lrhge * inv_r
        out_sum[13] += var_g * inv_r
        out_sum[14] += var_l * inv_r
        out_sum[15] += run_entropy
    return used


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------
#: Work done per centre, as bits of ``parts`` (all in production; ``scripts/bench_radiomics.py`` switches one off at
#: a time to time it by difference).
PART_GLCM_SLABS = 1
PART_GLRLM_SLABS = 2
PART_INTENSITY = 4
PART_GLCM_FEATURES = 8
PART_GLRLM_FEATURES = 16
PARTS_ALL = 31


@njit(**_JIT)
def _glcm_features(n_grey, cnt, occupied, px, psum, pdiff, clogc, fdir, out):
    """The 22 GLCM features averaged over the directions that have a pair into out[0:22] (NaN if none has)."""
    for k in range(N_GLCM):
        out[k] = 0.0
    used = 0
    for d in range(13):
        if _glcm_direction(d, n_grey, cnt, occupied, px, psum, pdiff, clogc, fdir):
            used += 1
            for k in range(N_GLCM):
                out[k] += fdir[k]
    for k in range(N_GLCM):
        out[k] = out[k] / used if used > 0 else np.nan


@njit(**_JIT)
def _process_line(centres, start, stop, grey, values, back, fwd, radius, n_grey, lmax, clogc, out, parts):
    """Features of the centres start..stop - 1 of one line (equal z, y; x ascending), sliding the box along x."""
    nz, ny, nx = grey.shape
    z = centres[start, 0]
    y = centres[start, 1]
    z0 = max(0, z - radius)
    z1 = min(nz - 1, z + radius)
    y0 = max(0, y - radius)
    y1 = min(ny - 1, y + radius)
    nzb = z1 - z0 + 1
    nyb = y1 - y0 + 1
    slab_cap = nzb * nyb
    box_cap = slab_cap * min(nx, 2 * radius + 1)
    dirs = DIRECTIONS_ZYX
    cnt = np.zeros((13, n_grey + 1, n_grey + 1), dtype=np.int32)
    occupied = np.zeros((13, n_grey + 1, n_grey // 64 + 1), dtype=np.uint64)
    px = np.empty(n_grey + 1, dtype=np.int64)
    psum = np.empty(2 * n_grey + 2, dtype=np.int64)
    pdiff = np.empty(n_grey + 1, dtype=np.int64)
    sv = np.empty(box_cap, dtype=np.float64)
    work = np.empty(box_cap, dtype=np.float64)
    # per slab in the box (at most min(nx, 2 r + 1)) and one leaving slab, by x mod ring_size: the sorted values and
    # the grey-level plane with its zero border (``no_plane``: a neighbour slab outside the box)
    ring_size = min(nx, 2 * radius + 1) + 1
    ring = np.empty((ring_size, slab_cap), dtype=np.float64)
    ring_n = np.zeros(ring_size, dtype=np.int64)
    planes = np.zeros((ring_size, nzb + 2, nyb + 2), dtype=np.int32)
    no_plane = np.zeros((nzb + 2, nyb + 2), dtype=np.int32)
    table = np.zeros((13, n_grey + 1, lmax + 1), dtype=np.int32)
    pg = np.zeros((13, n_grey + 1), dtype=np.int64)
    pr = np.zeros((13, lmax + 1), dtype=np.int64)
    ahead_zy = np.empty((nzb, nyb, 13), dtype=np.int32)
    behind_zy = np.empty((nzb, nyb, 13), dtype=np.int32)
    _face_steps(z0, z1, y0, y1, dirs, lmax, ahead_zy, behind_zy)
    fdir = np.empty(N_GLCM, dtype=np.float64)
    rsum = np.empty(N_GLRLM, dtype=np.float64)
    level_start = np.empty(n_grey + 2, dtype=np.int64)
    n_sorted = 0
    bx0 = max(0, centres[start, 2] - radius)
    bx1 = bx0 - 1
    for c in range(start, stop):
        cx = centres[c, 2]
        t0 = max(0, cx - radius)
        t1 = min(nx - 1, cx + radius)
        if t0 > bx1 and bx0 <= bx1:  # no overlap with the current box (a gap in the line): start from empty
            cnt[:] = 0
            occupied[:] = 0
            table[:] = 0
            pg[:] = 0
            pr[:] = 0
            n_sorted = 0
        if t0 > bx1:
            bx0 = t0
            bx1 = t0 - 1
        pending = -1  # a leaving slab whose values are merged out together with the entering one
        while bx0 < t0:
            r = bx0 % ring_size
            if parts & PART_GLCM_SLABS:
                neighbour = planes[(bx0 + 1) % ring_size] if bx0 < bx1 else no_plane
                _glcm_slab(planes[r], neighbour, nzb, nyb, -1, _FRONT_OFFSETS, _FRONT_DIRECTION, cnt, occupied)
            if parts & PART_GLRLM_SLABS:
                _glrlm_slab(bx0, -1, z0, z1, y0, y1, bx0, bx1, grey, back, fwd, dirs, ahead_zy, behind_zy, table, pg,
                            pr)
            if bx0 + 1 == t0 and bx1 + 1 == t1:
                pending = r
            else:
                n_sorted = _merge_remove(sv, n_sorted, ring[r], ring_n[r], work)
                sv, work = work, sv
            bx0 += 1
        while bx1 < t1:
            bx1 += 1
            r = bx1 % ring_size
            _gather_plane(grey, bx1, z0, z1, y0, y1, planes[r])
            if parts & PART_GLCM_SLABS:
                neighbour = planes[(bx1 - 1) % ring_size] if bx1 > bx0 else no_plane
                _glcm_slab(planes[r], neighbour, nzb, nyb, 1, _BACK_OFFSETS, _BACK_DIRECTION, cnt, occupied)
            if parts & PART_GLRLM_SLABS:
                _glrlm_slab(bx1, 1, z0, z1, y0, y1, bx0, bx1, grey, back, fwd, dirs, ahead_zy, behind_zy, table, pg,
                            pr)
            ring_n[r] = _gather_slab(values, grey, bx1, z0, z1, y0, y1, ring[r], level_start)
            if pending >= 0:
                n_sorted = _merge_replace(sv, n_sorted, ring[pending], ring_n[pending], ring[r], ring_n[r], work)
                pending = -1
            else:
                n_sorted = _merge_insert(sv, n_sorted, ring[r], ring_n[r], work)
            sv, work = work, sv
        row = out[c]
        if parts & PART_INTENSITY:
            intensity_features_sorted(sv, n_sorted, row[0:N_INTENSITY])
        if parts & PART_GLCM_FEATURES:
            _glcm_features(n_grey, cnt, occupied, px, psum, pdiff, clogc, fdir,
                           row[N_INTENSITY:N_INTENSITY + N_GLCM])
        used = 0
        if parts & PART_GLRLM_FEATURES and n_sorted > 0:
            used = _glrlm_features(n_sorted, n_grey, lmax, table, pg, pr, clogc, rsum)
        for k in range(N_GLRLM):
            row[N_INTENSITY + N_GLCM + k] = rsum[k] / used if used > 0 else np.nan


@njit(parallel=True, **_JIT)
def compute_lines(centres, line_starts, line_order, grey, values, back, fwd, radius, n_grey, lmax, clogc, out,
                  parts=PARTS_ALL):
    """Features of sorted centres (n, 3) grouped into lines ``line_starts`` (n_lines + 1,); writes out (n, 56).

    Lines run in parallel in the order ``line_order`` (longest first balances the threads when the caller sets a
    parallel chunk size of 1). ``parts`` selects the work (``PART_*`` bits; all by default).
    """
    for k in prange(len(line_order)):
        li = line_order[k]
        _process_line(centres, line_starts[li], line_starts[li + 1], grey, values, back, fwd, radius, n_grey, lmax,
                      clogc, out, parts)


def clogc_table(max_count: int) -> np.ndarray:
    """c log2 c for c = 0..max_count (0 log 0 = 0), shape (max_count + 1,)."""
    c = np.arange(max_count + 1, dtype=np.float64)
    table = np.zeros_like(c)
    table[1:] = c[1:] * np.log2(c[1:])
    return table
