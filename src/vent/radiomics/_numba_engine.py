"""CPU engine: sliding-window voxel-wise features compiled with numba.

Centres are sorted in (z, y, x) order and grouped into lines of equal (z, y). Along a line the kernel box slides one
voxel at a time in x: one slab of kernel_voxels^2 voxels leaves and one enters. All state is integer counts (or the
sorted multiset of values) that depend only on the current box, never on the path that reached it, so results do
not depend on block size, worker count or the order of centres (bit-identical). ``grey`` is 0 outside the kernel
mask, so it doubles as the mask.

* Intensity (IBSI 3.3): a sorted multiset of the raw values in the masked kernel. The entering slab is gathered and
  sorted once and kept (a ring of the box's sorted slabs), so leaving is one merge-remove and entering one
  merge-insert, O(kernel voxels) per step instead of a sort per centre.
* GLCM (IBSI 3.6, symmetric, distance 1, 13 directions): integer co-occurrence counts, upper triangle only
  (cnt[i, j] = P(i, j) = P(j, i), i <= j), plus the marginals p_x (= p_y), p_{x+y}, p_{x-y} and the total, updated
  per pair of the leaving / entering slab. Features come from the marginals in O(Ng) per direction; joint energy,
  joint entropy and joint maximum from one pass over the stored triangle (rows of levels present; sum P^2 exact in
  integers).
* GLRLM (IBSI 3.7, 13 directions): integer run-length tables (grey level, length) with their marginals r_i, r_j and
  N_r, updated per slab (:func:`_glrlm_slab`): for directions in the slab plane the slab's own runs leave or enter
  whole; for directions crossing it, each slab voxel is the first or last voxel of its line in the box, so exactly
  one run changes length by one (or appears / disappears). Run extents come from two precomputed arrays, the run
  voxels before (``back``) and after (``fwd``) each voxel per direction, laid out (Z, Y, X, 13); lengths are
  clipped by the box faces. Features come from the marginals and from the rows of levels present.

Directions with no pair (GLCM) or no run (GLRLM) in a kernel are left out of that kernel's average.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

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
def _gather_slab(values, grey, xs, z0, z1, y0, y1, buf):
    """Sorted raw values of the masked voxels (grey != 0) of slab x = xs into buf; returns their number."""
    m = 0
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            if grey[z, y, xs] != 0:
                buf[m] = values[z, y, xs]
                m += 1
    buf[:m].sort()
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
    total = 0.0
    energy = 0.0
    for i in range(n):
        total += v[i]
        energy += v[i] * v[i]
    mean = total / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    mad = 0.0
    for i in range(n):
        d = v[i] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
        mad += abs(d)
    m2 /= n
    m3 /= n
    m4 /= n
    mad /= n
    median = _percentile_sorted(v, n, 50.0)
    p10 = _percentile_sorted(v, n, 10.0)
    p25 = _percentile_sorted(v, n, 25.0)
    p75 = _percentile_sorted(v, n, 75.0)
    p90 = _percentile_sorted(v, n, 90.0)
    robust_sum = 0.0
    robust_n = 0
    for i in range(n):
        if v[i] >= p10 and v[i] <= p90:
            robust_sum += v[i]
            robust_n += 1
    robust_mean = robust_sum / robust_n
    rmad = 0.0
    medad = 0.0
    for i in range(n):
        if v[i] >= p10 and v[i] <= p90:
            rmad += abs(v[i] - robust_mean)
        medad += abs(v[i] - median)
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
def _glcm_slab(xs, s, z0, z1, y0, y1, bx0, bx1, grey, offs, off_dir, cnt, px, psum, pdiff, total):
    """Add (s = +1) or remove (s = -1) every pair that has a voxel in slab x = xs and both voxels in the box.

    ``offs`` (13, 3) are the 4 in-plane offsets of positive direction (each pair inside the slab counted once) and
    the 9 offsets towards the rest of the box (dx = +1 when the slab is the box's front face, -1 when its back face);
    ``off_dir`` their direction index. ``grey`` is 0 outside the kernel mask. Only the upper triangle of the
    symmetric GLCM is stored: cnt[d, i, j] = P(i, j) = P(j, i) for i <= j, so a pair adds 1 to an off-diagonal
    cell (whose mirror shares the stored value) or 2 to a diagonal cell.
    """
    for z in range(z0, z1 + 1):
        for y in range(y0, y1 + 1):
            ga = grey[z, y, xs]
            if ga == 0:
                continue
            for k in range(13):
                bz = z + offs[k, 0]
                by = y + offs[k, 1]
                bx = xs + offs[k, 2]
                if bz < z0 or bz > z1 or by < y0 or by > y1 or bx < bx0 or bx > bx1:
                    continue
                gb = grey[bz, by, bx]
                if gb == 0:
                    continue
                # upper-triangle cell (lo, hi): +-1 off the diagonal (the mirror shares it), +-2 on it; branch-free
                # (the order of the two levels is unpredictable)
                d = off_dir[k]
                lo = min(ga, gb)
                hi = max(ga, gb)
                cnt[d, lo, hi] += s + s * (lo == hi)
                px[d, ga] += s
                px[d, gb] += s
                psum[d, ga + gb] += 2 * s
                pdiff[d, hi - lo] += 2 * s
                total[d] += 2 * s


@njit(**_JIT)
def _glcm_direction(d, n_grey, cnt, px, psum, pdiff, total, clogc, out):
    """The 22 GLCM features (IBSI 3.6) of direction d from its integer state; returns False if it has no pair.

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
    n = total[d]
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
        c = px[d, i]
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
        c = px[d, i]
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
        c = psum[d, k]
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
        c = pdiff[d, k]
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
    # cell sums over the stored upper triangle (rows of grey levels present; an off-diagonal cell counts twice):
    # sum P^2 exactly in integers, sum P log2 P, max P; branch-free inner loops (c log2 c table: 0 log 0 = 0)
    sum_sq = 0
    sum_clogc = 0.0
    max_cell = 0
    for i in range(gmin, gmax + 1):
        if px[d, i] == 0:
            continue
        c = cnt[d, i, i]
        sum_sq += c * c
        sum_clogc += clogc[c]
        max_cell = max(max_cell, c)
        row_sq = 0
        row_clogc = 0.0
        for j in range(i + 1, gmax + 1):
            c = cnt[d, i, j]
            row_sq += c * c
            row_clogc += clogc[c]
            max_cell = max(max_cell, c)
        sum_sq += 2 * row_sq
        sum_clogc += 2.0 * row_clogc
    sum_c2 = float(sum_sq)
    single_cell = max_cell == n
    hxy = 0.0 if single_cell else log_n - sum_clogc * inv_n
    sum_entropy = 0.0 if psum[d, 2 * gmin] == n else log_n - se_acc * inv_n
    diff_entropy = 0.0 if pdiff[d, 0] == n else log_n - de_acc * inv_n
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
def _run_count_step(d, g, length, s, table, pg, pr, n_runs):
    """Add s (+1 / -1) runs of grey level g and length ``length`` to direction d's run-length table and marginals."""
    table[d, g, length] += s
    pg[d, g] += s
    pr[d, length] += s
    n_runs[d] += s


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
def _glrlm_slab(xs, s, z0, z1, y0, y1, bx0, bx1, grey, back, fwd, dirs, ahead_zy, behind_zy, table, pg, pr, n_runs):
    """Update the run-length tables when slab x = xs leaves (s = -1) or enters (s = +1) the box.

    The box [z0, z1] x [y0, y1] x [bx0, bx1] contains the slab: before removal xs = bx0, after insertion xs = bx1.
    Runs are maximal segments of equal grey level in the masked box along a direction. For a voxel v of the
    slab, with B(v) = min(back + 1, voxels to the box face behind v) and F(v) = min(fwd + 1, voxels to the face ahead):
    * directions in the slab plane (dx = 0): the runs that start in the slab (B = 1) leave or enter whole, with
      length F;
    * directions crossing the slab (dx = +-1): v is the first (B = 1) or else the last voxel of its line inside the
      box, so its run of length L (F if first, B if last) becomes L - 1 when v leaves, or was L - 1 before v entered.
    Only integer counts change, so the tables depend on the box alone, not on how it was reached.
    ``grey`` is 0 outside the kernel mask; ``ahead_zy``/``behind_zy`` come from :func:`_face_steps`.
    """
    x_ahead_pos = bx1 - xs + 1  # voxels to the x face ahead for dx = +1 (behind for dx = -1)
    x_behind_pos = xs - bx0 + 1
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
                    _run_count_step(d, g, length, s, table, pg, pr, n_runs)
                    continue
                if dx > 0:
                    ahead = min(ahead, x_ahead_pos)
                    behind = min(behind, x_behind_pos)
                else:
                    ahead = min(ahead, x_behind_pos)
                    behind = min(behind, x_ahead_pos)
                if behind == 1:  # first voxel of its line in the box
                    length = min(int(fwd[z, y, xs, d]) + 1, ahead)
                else:  # last voxel of its line in the box
                    length = min(int(back[z, y, xs, d]) + 1, behind)
                table[d, g, length] += s
                pr[d, length] += s
                if length > 1:  # the run of level g changes length only: r_i and N_r stay
                    table[d, g, length - 1] -= s
                    pr[d, length - 1] -= s
                else:
                    pg[d, g] += s
                    n_runs[d] += s


@njit(**_JIT)
def _glrlm_features(n_voxels, n_grey, lmax, table, pg, pr, n_runs, clogc, out_sum):
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
        runs = n_runs[d]
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
@njit(**_JIT)
def _process_line(centres, start, stop, grey, values, back, fwd, radius, n_grey, lmax, clogc, out,
                  out_row0):
    nz, ny, nx = grey.shape
    z = centres[start, 0]
    y = centres[start, 1]
    z0 = max(0, z - radius)
    z1 = min(nz - 1, z + radius)
    y0 = max(0, y - radius)
    y1 = min(ny - 1, y + radius)
    slab_cap = (z1 - z0 + 1) * (y1 - y0 + 1)
    box_cap = slab_cap * min(nx, 2 * radius + 1)
    front_offs = _FRONT_OFFSETS
    front_dir = _FRONT_DIRECTION
    back_offs = _BACK_OFFSETS
    back_dir = _BACK_DIRECTION
    dirs = DIRECTIONS_ZYX
    cnt = np.zeros((13, n_grey + 1, n_grey + 1), dtype=np.int32)
    px = np.zeros((13, n_grey + 1), dtype=np.int64)
    psum = np.zeros((13, 2 * n_grey + 2), dtype=np.int64)
    pdiff = np.zeros((13, n_grey + 1), dtype=np.int64)
    total = np.zeros(13, dtype=np.int64)
    sv = np.empty(box_cap, dtype=np.float64)
    work = np.empty(box_cap, dtype=np.float64)
    # sorted values of the slabs in the box (at most min(nx, 2 r + 1)) and of one leaving slab, by x mod ring_size
    ring_size = min(nx, 2 * radius + 1) + 1
    ring = np.empty((ring_size, slab_cap), dtype=np.float64)
    ring_n = np.zeros(ring_size, dtype=np.int64)
    table = np.zeros((13, n_grey + 1, lmax + 1), dtype=np.int32)
    pg = np.zeros((13, n_grey + 1), dtype=np.int64)
    pr = np.zeros((13, lmax + 1), dtype=np.int64)
    n_runs = np.zeros(13, dtype=np.int64)
    ahead_zy = np.empty((z1 - z0 + 1, y1 - y0 + 1, 13), dtype=np.int64)
    behind_zy = np.empty((z1 - z0 + 1, y1 - y0 + 1, 13), dtype=np.int64)
    _face_steps(z0, z1, y0, y1, dirs, lmax, ahead_zy, behind_zy)
    fdir = np.empty(N_GLCM, dtype=np.float64)
    fsum = np.empty(N_GLCM, dtype=np.float64)
    rsum = np.empty(N_GLRLM, dtype=np.float64)
    n_sorted = 0
    bx0 = max(0, centres[start, 2] - radius)
    bx1 = bx0 - 1
    for c in range(start, stop):
        cx = centres[c, 2]
        t0 = max(0, cx - radius)
        t1 = min(nx - 1, cx + radius)
        if t0 > bx1 and bx0 <= bx1:  # no overlap with the current box (a gap in the line): start from empty
            cnt[:] = 0
            px[:] = 0
            psum[:] = 0
            pdiff[:] = 0
            total[:] = 0
            table[:] = 0
            pg[:] = 0
            pr[:] = 0
            n_runs[:] = 0
            n_sorted = 0
        if t0 > bx1:
            bx0 = t0
            bx1 = t0 - 1
        pending = -1  # a leaving slab whose values are merged out together with the entering one
        while bx0 < t0:
            _glcm_slab(bx0, -1, z0, z1, y0, y1, bx0, bx1, grey, front_offs, front_dir, cnt, px, psum, pdiff, total)
            _glrlm_slab(bx0, -1, z0, z1, y0, y1, bx0, bx1, grey, back, fwd, dirs, ahead_zy, behind_zy, table, pg,
                        pr, n_runs)
            if bx0 + 1 == t0 and bx1 + 1 == t1:
                pending = bx0 % ring_size
            else:
                r = bx0 % ring_size
                n_sorted = _merge_remove(sv, n_sorted, ring[r], ring_n[r], work)
                sv, work = work, sv
            bx0 += 1
        while bx1 < t1:
            bx1 += 1
            _glcm_slab(bx1, 1, z0, z1, y0, y1, bx0, bx1, grey, back_offs, back_dir, cnt, px, psum, pdiff, total)
            _glrlm_slab(bx1, 1, z0, z1, y0, y1, bx0, bx1, grey, back, fwd, dirs, ahead_zy, behind_zy, table, pg,
                        pr, n_runs)
            r = bx1 % ring_size
            ring_n[r] = _gather_slab(values, grey, bx1, z0, z1, y0, y1, ring[r])
            if pending >= 0:
                n_sorted = _merge_replace(sv, n_sorted, ring[pending], ring_n[pending], ring[r], ring_n[r], work)
                pending = -1
            else:
                n_sorted = _merge_insert(sv, n_sorted, ring[r], ring_n[r], work)
            sv, work = work, sv
        row = out_row0 + c
        intensity_features_sorted(sv, n_sorted, out[row, 0:N_INTENSITY])
        for k in range(N_GLCM):
            fsum[k] = 0.0
        used = 0
        for d in range(13):
            if _glcm_direction(d, n_grey, cnt, px, psum, pdiff, total, clogc, fdir):
                used += 1
                for k in range(N_GLCM):
                    fsum[k] += fdir[k]
        for k in range(N_GLCM):
            out[row, N_INTENSITY + k] = fsum[k] / used if used > 0 else np.nan
        used = _glrlm_features(n_sorted, n_grey, lmax, table, pg, pr, n_runs, clogc, rsum) if n_sorted > 0 else 0
        for k in range(N_GLRLM):
            out[row, N_INTENSITY + N_GLCM + k] = rsum[k] / used if used > 0 else np.nan


@njit(parallel=True, **_JIT)
def compute_lines(centres, line_starts, line_order, grey, values, back, fwd, radius, n_grey, lmax, clogc, out):
    """Features of sorted centres (n, 3) grouped into lines ``line_starts`` (n_lines + 1,); writes out (n, 56).

    Lines run in parallel in the order ``line_order`` (longest first balances the threads when the caller sets a
    parallel chunk size of 1).
    """
    for k in prange(len(line_order)):
        li = line_order[k]
        _process_line(centres, line_starts[li], line_starts[li + 1], grey, values, back, fwd, radius, n_grey, lmax,
                      clogc, out, 0)


def clogc_table(max_count: int) -> np.ndarray:
    """c log2 c for c = 0..max_count (0 log 0 = 0), shape (max_count + 1,)."""
    c = np.arange(max_count + 1, dtype=np.float64)
    table = np.zeros_like(c)
    table[1:] = c[1:] * np.log2(c[1:])
    return table
