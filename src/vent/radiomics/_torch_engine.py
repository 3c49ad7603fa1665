"""Torch engine (GPU path, also runs on the torch CPU device): dense per-centre matrices, batched.

For a batch of centres the kernel patches (B, K, K, K) are gathered from arrays padded by the kernel radius (grey
level 0 / NaN outside the kernel mask). GLCM: every pair of each of the 13 directions is scattered into dense
(B, 13, Ng, Ng) symmetric counts. GLRLM: the length of the run ending at each voxel is found by K - 1 rounds of
"length = previous length + 1 where the predecessor has the same grey level", and run ends are scattered into
(B, 13, Ng, K) counts. Intensity: the patch values are sorted (NaN last). The feature formulas are those of
:mod:`vent.radiomics._numba_engine` (same definitions, IBSI ids in its docstrings), written over dense tensors.
"""

from __future__ import annotations

import numpy as np
import torch

from vent.radiomics._numba_engine import DIRECTIONS_ZYX, N_ALL, N_GLCM, N_GLRLM, N_INTENSITY

BATCH = 32


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _pair_slices(offset: int, size: int) -> tuple[slice, slice]:
    """Slices (first, second) along one axis so that second = first + offset."""
    if offset == 1:
        return slice(0, size - 1), slice(1, size)
    if offset == -1:
        return slice(1, size), slice(0, size - 1)
    return slice(0, size), slice(0, size)


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * torch.log2(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))


def _percentile(sorted_v: torch.Tensor, n: torch.Tensor, q: float) -> torch.Tensor:
    h = (n - 1).double() * q / 100.0
    lo = torch.clamp(torch.floor(h).long(), min=0)
    hi = torch.minimum(lo + 1, torch.clamp(n - 1, min=0))
    a = sorted_v.gather(1, lo[:, None])[:, 0]
    b = sorted_v.gather(1, hi[:, None])[:, 0]
    t = h - lo.double()
    return torch.where(t >= 0.5, b - (b - a) * (1.0 - t), a + (b - a) * t)


def _intensity(vals: torch.Tensor) -> torch.Tensor:
    """The 18 intensity features of each row of vals (B, M), NaN = outside the kernel (IBSI 3.3, see numba)."""
    v, _ = torch.sort(vals, dim=1)  # NaN sort last
    valid = ~torch.isnan(v)
    n = valid.sum(1)
    nf = n.double()
    x = torch.where(valid, v, torch.zeros_like(v))
    mean = x.sum(1) / nf
    d = torch.where(valid, v - mean[:, None], torch.zeros_like(v))
    m2 = (d**2).sum(1) / nf
    m3 = (d**3).sum(1) / nf
    m4 = (d**4).sum(1) / nf
    p10, p25, p50, p75, p90 = (_percentile(v, n, q) for q in (10.0, 25.0, 50.0, 75.0, 90.0))
    in_robust = valid & (v >= p10[:, None]) & (v <= p90[:, None])
    robust_mean = torch.where(in_robust, v, torch.zeros_like(v)).sum(1) / in_robust.sum(1)
    rmad = torch.where(in_robust, (v - robust_mean[:, None]).abs(), torch.zeros_like(v)).sum(1) / in_robust.sum(1)
    energy = (x**2).sum(1)
    vmin = v[:, 0]
    vmax = v.gather(1, torch.clamp(n - 1, min=0)[:, None])[:, 0]
    positive = m2 > 0
    out = torch.stack([
        mean, m2,
        torch.where(positive, m3 / m2.clamp(min=1e-300) ** 1.5, torch.zeros_like(m2)),
        torch.where(positive, m4 / m2.clamp(min=1e-300) ** 2 - 3.0, torch.zeros_like(m2)),
        p50, vmin, p10, p90, vmax, p75 - p25, vmax - vmin,
        d.abs().sum(1) / nf, rmad,
        torch.where(valid, (v - p50[:, None]).abs(), torch.zeros_like(v)).sum(1) / nf,
        torch.sqrt(m2) / mean, (p75 - p25) / (p75 + p25), energy, torch.sqrt(energy / nf),
    ], dim=1)
    return torch.where((n > 0)[:, None], out, torch.full_like(out, float("nan")))


def _glcm(grey: torch.Tensor, n_grey: int) -> torch.Tensor:
    """The 22 GLCM features (IBSI 3.6, 3D averaged, see numba docstring) of patches grey (B, K, K, K)."""
    batch, size = grey.shape[0], grey.shape[1]
    levels = n_grey + 1
    counts = []
    for dz, dy, dx in DIRECTIONS_ZYX.tolist():
        sz, tz = _pair_slices(dz, size)
        sy, ty = _pair_slices(dy, size)
        sx, tx = _pair_slices(dx, size)
        a = grey[:, sz, sy, sx].reshape(batch, -1)
        b = grey[:, tz, ty, tx].reshape(batch, -1)
        valid = ((a > 0) & (b > 0)).double()
        c = torch.zeros(batch, levels * levels, dtype=torch.float64, device=grey.device)
        c.scatter_add_(1, a * levels + b, valid)
        c = c.reshape(batch, levels, levels)
        counts.append((c + c.transpose(1, 2))[:, 1:, 1:])
    P = torch.stack(counts, dim=1)  # (B, 13, Ng, Ng)
    total = P.sum((-2, -1))
    nonempty = total > 0
    p = P / torch.where(nonempty, total, torch.ones_like(total))[..., None, None]
    g = torch.arange(1, levels, dtype=torch.float64, device=grey.device)
    i, j = g[:, None], g[None, :]
    px = p.sum(-1)
    mu = (px * g).sum(-1)
    var = (px * (g - mu[..., None]) ** 2).sum(-1)
    hx = -_xlogx(px).sum(-1)
    hxy = -_xlogx(p).sum((-2, -1))
    ksum = (i + j).long().reshape(-1) - 2
    kdiff = (i - j).abs().long().reshape(-1)
    flat = p.reshape(p.shape[0], 13, -1)
    psum = torch.zeros(p.shape[0], 13, 2 * n_grey - 1, dtype=torch.float64, device=grey.device)
    psum.scatter_add_(2, ksum.expand_as(flat), flat)
    pdiff = torch.zeros(p.shape[0], 13, n_grey, dtype=torch.float64, device=grey.device)
    pdiff.scatter_add_(2, kdiff.expand_as(flat), flat)
    ks = torch.arange(2, 2 * n_grey + 1, dtype=torch.float64, device=grey.device)
    kd = torch.arange(0, n_grey, dtype=torch.float64, device=grey.device)
    t = ks - 2.0 * mu[..., None]
    ct = (t**2 * psum).sum(-1)
    contrast = (kd**2 * pdiff).sum(-1)
    n_levels = (px > 0).sum(-1)
    mutual = 2.0 * hx - hxy
    ng = float(n_grey)
    kd_pos = torch.where(kd > 0, kd, torch.ones_like(kd))
    feats = torch.stack([
        ((ks**2 * psum).sum(-1) - contrast) / 4.0,
        (t**4 * psum).sum(-1),
        (t**3 * psum).sum(-1),
        ct,
        contrast,
        torch.where(n_levels > 1, (ct - contrast) / (4.0 * var.clamp(min=1e-300)), torch.ones_like(var)),
        -_xlogx(pdiff).sum(-1),
        (kd * pdiff).sum(-1),
        (p**2).sum((-2, -1)),
        hxy,
        (pdiff / (1.0 + kd)).sum(-1),
        (pdiff / (1.0 + kd**2)).sum(-1),
        torch.where(hx > 0, (hxy - 2.0 * hx) / hx.clamp(min=1e-300), torch.zeros_like(hx)),
        torch.where(mutual > 0, torch.sqrt(1.0 - torch.exp(-2.0 * mutual.clamp(min=0))), torch.zeros_like(hx)),
        (pdiff / (1.0 + kd**2 / ng**2)).sum(-1),
        (pdiff / (1.0 + kd / ng)).sum(-1),
        torch.where(kd > 0, pdiff / kd_pos**2, torch.zeros_like(pdiff)).sum(-1),
        torch.amax(p, dim=(-2, -1)),
        (ks * psum).sum(-1),
        -_xlogx(psum).sum(-1),
        ct,
        var,
    ], dim=-1)  # (B, 13, 22)
    weight = nonempty.double()[..., None]
    used = weight.sum(1)
    return (torch.where(nonempty[..., None], feats, torch.zeros_like(feats)) * weight).sum(1) / used


def _glrlm(grey: torch.Tensor, n_grey: int) -> torch.Tensor:
    """The 16 GLRLM features (IBSI 3.7, 3D averaged, see numba docstring) of patches grey (B, K, K, K)."""
    batch, size = grey.shape[0], grey.shape[1]
    levels = n_grey + 1
    inside = grey > 0
    tables = []
    for dz, dy, dx in DIRECTIONS_ZYX.tolist():
        sz, tz = _pair_slices(dz, size)
        sy, ty = _pair_slices(dy, size)
        sx, tx = _pair_slices(dx, size)
        same = torch.zeros_like(inside)  # same[v]: v continues the run of its predecessor v - d
        same[:, tz, ty, tx] = inside[:, tz, ty, tx] & (grey[:, tz, ty, tx] == grey[:, sz, sy, sx])
        continued = torch.zeros_like(inside)  # continued[v]: v + d continues v's run
        continued[:, sz, sy, sx] = same[:, tz, ty, tx]
        length = inside.long()
        for _ in range(size - 1):
            shifted = torch.zeros_like(length)
            shifted[:, tz, ty, tx] = length[:, sz, sy, sx]
            length = torch.where(same, shifted + 1, inside.long())
        ends = inside & ~continued
        table = torch.zeros(batch, levels * (size + 1), dtype=torch.float64, device=grey.device)
        table.scatter_add_(1, (grey * (size + 1) + length).reshape(batch, -1), ends.reshape(batch, -1).double())
        tables.append(table.reshape(batch, levels, size + 1)[:, 1:, 1:])
    P = torch.stack(tables, dim=1)  # (B, 13, Ng, K)
    n_runs = P.sum((-2, -1))
    nonempty = n_runs > 0
    nr = torch.where(nonempty, n_runs, torch.ones_like(n_runs))
    gi = torch.arange(1, levels, dtype=torch.float64, device=grey.device)[:, None]
    lj = torch.arange(1, size + 1, dtype=torch.float64, device=grey.device)[None, :]
    pg = P.sum(-1)
    pr = P.sum(-2)
    n_vox = (P * lj).sum((-2, -1))
    g1 = gi[:, 0]
    l1 = lj[0]
    mu_g = (pg * g1).sum(-1) / nr
    mu_l = (pr * l1).sum(-1) / nr

    def weighted(w: torch.Tensor) -> torch.Tensor:
        return (P * w).sum((-2, -1)) / nr

    feats = torch.stack([
        weighted(1.0 / lj**2), weighted(lj**2),
        (pg**2).sum(-1) / nr, (pg**2).sum(-1) / nr**2,
        (pr**2).sum(-1) / nr, (pr**2).sum(-1) / nr**2,
        nr / torch.where(nonempty, n_vox, torch.ones_like(n_vox)),
        weighted(1.0 / gi**2), weighted(gi**2),
        weighted(1.0 / (gi**2 * lj**2)), weighted(gi**2 / lj**2), weighted(lj**2 / gi**2), weighted(gi**2 * lj**2),
        (pg * (g1 - mu_g[..., None]) ** 2).sum(-1) / nr,
        (pr * (l1 - mu_l[..., None]) ** 2).sum(-1) / nr,
        -_xlogx(P / nr[..., None, None]).sum((-2, -1)),
    ], dim=-1)  # (B, 13, 16)
    weight = nonempty.double()[..., None]
    return (torch.where(nonempty[..., None], feats, torch.zeros_like(feats)) * weight).sum(1) / weight.sum(1)


def all_features(values: np.ndarray, grey: np.ndarray, kmask: np.ndarray, sorted_centres: np.ndarray, radius: int,
                 n_grey: int) -> np.ndarray:
    """All 56 features (n, 56) float64 for centres (n, 3); same contract as the numba engine."""
    device = _device()
    size = 2 * radius + 1
    pad = [(radius, radius)] * 3
    grey_t = torch.from_numpy(np.pad(np.where(kmask, grey, 0).astype(np.int64), pad)).to(device)
    vals_t = torch.from_numpy(np.pad(np.where(kmask, values, np.nan), pad, constant_values=np.nan)).to(device)
    offsets = torch.arange(size, device=device)
    out = np.empty((len(sorted_centres), N_ALL), dtype=np.float64)
    for start in range(0, len(sorted_centres), BATCH):
        c = torch.from_numpy(sorted_centres[start:start + BATCH]).to(device)
        zi = (c[:, 0:1] + offsets)[:, :, None, None]
        yi = (c[:, 1:2] + offsets)[:, None, :, None]
        xi = (c[:, 2:3] + offsets)[:, None, None, :]
        g = grey_t[zi, yi, xi]
        v = vals_t[zi, yi, xi].reshape(len(c), -1)
        block = torch.cat([_intensity(v), _glcm(g, n_grey), _glrlm(g, n_grey)], dim=1)
        out[start:start + len(c)] = block.cpu().numpy()
    assert out.shape[1] == N_INTENSITY + N_GLCM + N_GLRLM
    return out
