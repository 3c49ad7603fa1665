"""Thorax anatomy of a synthetic subject at maximum exhalation (the reference configuration).

All shapes are implicit functions (approximate signed distances, negative inside) in *local* coordinates: mm
relative to the subject's anatomical centre, x = patient left, y = posterior, z = superior, z = 0 at the lowest point
of the lungs. Occupancies include the CT partial-volume effect (``grids.box_partial_volume``).

Attenuation is handled as ``A = HU + 1000`` (0 for air, ~1040 for soft tissue), because A of lung parenchyma scales
with its tissue fraction: a voxel with tissue fraction tau has HU = -1000 (1 - tau) + HU_tissue tau, so
A = tau (1000 + HU_tissue) (mass conservation makes tau, hence A, scale with 1/J under expansion J).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vent.synth.grids import Grid, box_partial_volume, ellipse_signed_distance

#: Attenuation A = HU + 1000 of the tissues used (HU values from standard CT tables).
A_FAT = 1000.0 - 100.0
A_MEDIASTINAL_FAT = 1000.0 - 90.0
A_MUSCLE = 1000.0 + 50.0
A_BLOOD = 1000.0 + 40.0
A_LIVER = 1000.0 + 58.0
A_AIRWAY_WALL = 1000.0 + 20.0
A_CANCELLOUS_BONE = 1000.0 + 400.0
A_CORTICAL_BONE = 1000.0 + 1000.0
A_RIB = 1000.0 + 650.0
A_DISC = 1000.0 + 80.0
#: Attenuation of the lung's tissue-and-blood component (HU ~ +40).
A_LUNG_TISSUE = 1000.0 + 40.0


@dataclass(frozen=True)
class TubeSegment:
    """A straight tube (vessel or airway) from ``start`` to ``end`` (local mm, z y x) with a radius in mm."""

    start_zyx: tuple[float, float, float]
    end_zyx: tuple[float, float, float]
    radius_mm: float
    generation: int


@dataclass
class Anatomy:
    """Sizes and positions (mm, local coordinates) of one subject's thorax; see module docstring."""

    scale_xy: float
    scale_z: float
    body_radius_x: float
    body_radius_y: float
    fat_thickness: float
    lung_height: float
    lung_center_x: float
    lung_center_y: float
    lung_radius_x: float
    lung_radius_y: float
    dome_height: tuple[float, float]  # (right, left)
    mediastinum_center_y: float
    mediastinum_radii_xy: tuple[float, float]
    heart_center_zyx: tuple[float, float, float]
    heart_radii_zyx: tuple[float, float, float]
    aorta_center_xy: tuple[float, float]
    aorta_radius: float
    spine_center_y: float
    spine_radius: float
    rib_period: float
    rib_phase: float
    tissue_fraction: float  # mean parenchymal tissue fraction at exhale (HU ~ -1000 + 1040 tau)
    gravity_gradient: float  # relative increase of tissue fraction from anterior to posterior lung edge
    hilum_zyx: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # side (-1 right, +1 left)

    @property
    def scale_iso(self) -> float:
        """Geometric-mean scale factor relative to an adult thorax."""
        return float((self.scale_xy**2 * self.scale_z) ** (1.0 / 3.0))

    def extent_local_zyx(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corners (local mm, z y x) of the CT field of view."""
        margin_xy = 12.0 * self.scale_xy + 4.0
        low = np.array([-0.30 * self.lung_height, -self.body_radius_y - margin_xy, -self.body_radius_x - margin_xy])
        high = np.array([1.12 * self.lung_height, self.body_radius_y + margin_xy, self.body_radius_x + margin_xy])
        return low, high


def sample_anatomy(rng: np.random.Generator, scale_xy: float, scale_z: float) -> Anatomy:
    """Draw one subject's thorax dimensions (adult sizes times ``scale_xy``/``scale_z``, +/- ~8%).

    Args:
        rng: Random generator (consumed).
        scale_xy: In-plane scale relative to an adult (1 for the ``full`` size).
        scale_z: Cranio-caudal scale relative to an adult.

    Returns:
        The anatomy.
    """
    def jitter(value: float, rel: float = 0.08) -> float:
        return float(value * (1.0 + rel * rng.uniform(-1.0, 1.0)))

    sxy, sz = scale_xy, scale_z
    body_rx, body_ry = jitter(160.0) * sxy, jitter(112.0) * sxy
    lung_h = jitter(225.0, 0.1) * sz
    anatomy = Anatomy(
        scale_xy=sxy,
        scale_z=sz,
        body_radius_x=body_rx,
        body_radius_y=body_ry,
        fat_thickness=rng.uniform(8.0, 22.0) * sxy,
        lung_height=lung_h,
        lung_center_x=0.44 * body_rx,
        lung_center_y=0.04 * body_ry,
        lung_radius_x=jitter(0.39 * body_rx / sxy, 0.05) * sxy,
        lung_radius_y=jitter(0.74 * body_ry / sxy, 0.05) * sxy,
        dome_height=(jitter(55.0, 0.15) * sz, jitter(42.0, 0.15) * sz),
        mediastinum_center_y=-0.25 * body_ry,
        mediastinum_radii_xy=(0.17 * body_rx, 0.56 * body_ry),
        heart_center_zyx=(0.22 * lung_h, -0.30 * body_ry, 0.14 * body_rx),
        heart_radii_zyx=(0.24 * lung_h, 0.40 * body_ry, jitter(0.33, 0.1) * body_rx),
        aorta_center_xy=(0.13 * body_rx, 0.42 * body_ry),
        aorta_radius=12.0 * sxy,
        spine_center_y=0.64 * body_ry,
        spine_radius=0.15 * body_rx,
        rib_period=jitter(26.0) * sz,
        rib_phase=float(rng.uniform(0.0, 26.0)) * sz,
        tissue_fraction=rng.uniform(0.14, 0.19),
        gravity_gradient=rng.uniform(0.25, 0.45),
    )
    for side in (-1, 1):
        anatomy.hilum_zyx[side] = (
            0.58 * lung_h,
            anatomy.lung_center_y - 0.08 * anatomy.lung_radius_y,
            side * (anatomy.lung_center_x - 0.52 * anatomy.lung_radius_x),
        )
    return anatomy


def _ellipsoid_signed_distance(dz, dy, dx, radii_zyx) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid: r (1 - 1/rho), rho its normalised radius."""
    radius = np.sqrt(dz * dz + dy * dy + dx * dx)
    rho = np.sqrt((dz / radii_zyx[0]) ** 2 + (dy / radii_zyx[1]) ** 2 + (dx / radii_zyx[2]) ** 2)
    return (radius - radius / np.maximum(rho, 1e-6)).astype(np.float32)


def lung_signed_distance(anatomy: Anatomy, z, y, x) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to the union of both lungs at exhale.

    Each lung is an ellipse in the axial plane tapering towards the apex (radius factor sqrt(1 - h^2.5), h the
    height fraction), standing on a diaphragm dome (paraboloid, highest anteromedially so that the posterior
    costophrenic recess is deepest), with the mediastinum, heart (cardiac notch on the left), aorta and spine cut out.

    Args:
        anatomy: The subject's anatomy.
        z, y, x: Broadcastable local coordinates in mm.

    Returns:
        float32 array of the broadcast shape.
    """
    a = anatomy
    h = np.clip(z / a.lung_height, 0.0, None)
    taper = np.sqrt(np.clip(1.0 - h**2.5, 0.0, 1.0))
    distances = []
    for side, dome in zip((-1, 1), a.dome_height):
        dx = x - side * a.lung_center_x
        dy = y - a.lung_center_y
        d_ellipse = ellipse_signed_distance(dx, dy, a.lung_radius_x * taper, a.lung_radius_y * taper)
        rho2 = ((dx + side * 0.15 * a.lung_radius_x) / a.lung_radius_x) ** 2 + (
            (dy + 0.25 * a.lung_radius_y) / (1.1 * a.lung_radius_y)
        ) ** 2
        z_dome = dome * np.clip(1.0 - rho2, 0.0, 1.0)
        d_dome = (z_dome - z) * np.float32(0.8)
        distances.append(np.maximum(d_ellipse, d_dome))
    d_lungs = np.minimum(distances[0], distances[1])
    d_mediastinum = ellipse_signed_distance(x, y - a.mediastinum_center_y, *a.mediastinum_radii_xy)
    d_heart = _ellipsoid_signed_distance(
        z - a.heart_center_zyx[0], y - a.heart_center_zyx[1], x - a.heart_center_zyx[2], a.heart_radii_zyx
    )
    d_aorta = ellipse_signed_distance(
        x - a.aorta_center_xy[0], y - a.aorta_center_xy[1], a.aorta_radius, a.aorta_radius
    )
    d_spine = ellipse_signed_distance(x, y - a.spine_center_y, 1.25 * a.spine_radius, 1.25 * a.spine_radius)
    pleura = 1.5 * a.scale_xy
    cut = np.minimum(np.minimum(d_mediastinum, d_heart), np.minimum(d_aorta, d_spine)) - pleura
    return np.maximum(d_lungs, -cut).astype(np.float32)


def body_attenuation(anatomy: Anatomy, grid: Grid, center_mm_zyx) -> np.ndarray:
    """Attenuation A = HU + 1000 of everything but the lungs and airways, on ``grid`` (reference configuration).

    Painted in order: air, subcutaneous fat, muscle, mediastinal fat, heart and aorta (blood), liver under the right
    dome, ribs, vertebral bodies (cancellous core, cortical shell, discs).

    Args:
        anatomy: The subject's anatomy.
        grid: CT grid.
        center_mm_zyx: Physical position of the local origin.

    Returns:
        float32 array of shape ``grid.shape_zyx``.
    """
    a = anatomy
    z, y, x = grid.mesh_mm_zyx()
    z, y, x = z - center_mm_zyx[0], y - center_mm_zyx[1], x - center_mm_zyx[2]
    spacing = grid.spacing_mm_zyx
    shape = grid.shape_zyx
    full = np.broadcast_to

    def paint(target: np.ndarray, distance: np.ndarray, value: float) -> None:
        occupancy = box_partial_volume(full(distance, shape).astype(np.float32), spacing)
        target *= 1.0 - occupancy
        target += occupancy * value

    atten = np.zeros(shape, dtype=np.float32)
    d_body = ellipse_signed_distance(x, y, a.body_radius_x, a.body_radius_y)
    paint(atten, d_body, A_FAT)
    d_muscle = ellipse_signed_distance(x, y, a.body_radius_x - a.fat_thickness, a.body_radius_y - a.fat_thickness)
    paint(atten, d_muscle, A_MUSCLE)
    d_mediastinum = ellipse_signed_distance(x, y - a.mediastinum_center_y, *a.mediastinum_radii_xy)
    in_chest = np.maximum(d_mediastinum, 0.05 * a.lung_height - z)
    paint(atten, in_chest, A_MEDIASTINAL_FAT)
    d_heart = _ellipsoid_signed_distance(
        z - a.heart_center_zyx[0], y - a.heart_center_zyx[1], x - a.heart_center_zyx[2], a.heart_radii_zyx
    )
    paint(atten, d_heart, A_BLOOD)
    d_aorta = ellipse_signed_distance(
        x - a.aorta_center_xy[0], y - a.aorta_center_xy[1], a.aorta_radius, a.aorta_radius
    )
    paint(atten, d_aorta, A_BLOOD)
    # Liver under the right dome: everything inside the muscle wall below the lung base on the right.
    d_liver = np.maximum(np.maximum(d_muscle + 3.0, z - 0.15 * a.lung_height), x + 0.1 * a.body_radius_x)
    paint(atten, d_liver, A_LIVER)
    # Ribs: slanted bands on a ring just inside the muscle wall, open anteriorly (costal cartilage).
    ring = ellipse_signed_distance(x, y, a.body_radius_x - a.fat_thickness - 9.0 * a.scale_xy,
                                   a.body_radius_y - a.fat_thickness - 9.0 * a.scale_xy)
    band = np.mod(z + 0.25 * y + a.rib_phase, a.rib_period) - 0.5 * a.rib_period
    rib_half_z = 5.0 * a.scale_z + 0.5
    rib_half_r = 5.0 * a.scale_xy + 0.5
    d_rib = (np.sqrt((ring / rib_half_r) ** 2 + (band / rib_half_z) ** 2) - 1.0) * min(rib_half_r, rib_half_z)
    d_rib = np.maximum(d_rib, -0.1 * a.lung_height - z)
    rib = box_partial_volume(np.broadcast_to(d_rib, shape).astype(np.float32), spacing)
    # No ribs at the front near the midline (costal cartilage and sternum region): a smooth gap.
    width = 3.0 * a.scale_xy + 1.0
    anterior = _smooth_step((-y - 0.55 * a.body_radius_y) / width)
    gap = anterior * _smooth_step((0.3 * a.body_radius_x - np.abs(x)) / width)
    rib *= 1.0 - gap
    atten *= 1.0 - rib
    atten += rib * A_RIB
    # Spine: vertebral bodies (cortical shell, cancellous core) and intervertebral discs.
    d_vertebra = ellipse_signed_distance(x, y - a.spine_center_y, a.spine_radius, a.spine_radius)
    paint(atten, d_vertebra, A_CORTICAL_BONE)
    paint(atten, d_vertebra + 2.0 * max(a.scale_xy, 0.5), A_CANCELLOUS_BONE)
    disc_band = np.abs(np.mod(z + 0.5 * a.rib_phase, 1.15 * a.rib_period) - 0.5 * 1.15 * a.rib_period)
    d_disc = np.maximum(d_vertebra, disc_band - 2.5 * a.scale_z - 0.5)
    paint(atten, d_disc, A_DISC)
    return atten


def _smooth_step(values: np.ndarray) -> np.ndarray:
    """Logistic step 1 / (1 + exp(-v)), float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * values))).astype(np.float32)


def grow_tree(
    rng: np.random.Generator,
    anatomy: Anatomy,
    side: int,
    root_radius_mm: float,
    max_generation: int,
    min_radius_mm: float,
) -> list[TubeSegment]:
    """Grow one branching tube tree (vessels or airways) from a lung's hilum.

    Five main branches leave the hilum (cranial, caudal, anterior, posterior, lateral); each bifurcates with child
    radius r / 2^(1/3) (Murray's law), length x0.75 and branching angles of 20-45 degrees about a random axis, until
    ``max_generation``, ``min_radius_mm`` or the lung surface is reached.

    Args:
        rng: Random generator (consumed).
        anatomy: The subject's anatomy.
        side: -1 for the right lung, +1 for the left.
        root_radius_mm: Radius of the main branches.
        max_generation: Number of bifurcation levels.
        min_radius_mm: Branches thinner than this are dropped.

    Returns:
        The tree's segments (local mm).
    """
    a = anatomy
    scale = np.array([a.scale_z, a.scale_xy, a.scale_xy])
    main_directions = [(1.0, 0.0, 0.2 * side), (-1.0, 0.3, 0.25 * side), (-0.2, -1.0, 0.3 * side),
                       (-0.2, 1.0, 0.3 * side), (0.0, 0.1, 1.0 * side)]
    hilum = np.array(a.hilum_zyx[side])
    segments: list[TubeSegment] = []
    stack = []
    for direction in main_directions:
        d = np.asarray(direction) + rng.normal(0.0, 0.15, 3)
        stack.append((hilum, d / np.linalg.norm(d), root_radius_mm, 45.0, 0))

    def inside(point: np.ndarray) -> bool:
        return float(lung_signed_distance(a, *point)) < -0.5

    while stack:
        start, direction, radius, length, generation = stack.pop()
        if generation > max_generation or radius < min_radius_mm:
            continue
        step = direction * length * scale
        end = start + step
        shortened = 0
        while not inside(end) and shortened < 3:
            step *= 0.5
            end = start + step
            shortened += 1
        if not inside(end):
            continue
        segments.append(TubeSegment(tuple(start), tuple(end), float(radius), generation))
        axis = np.cross(direction, rng.normal(size=3))
        axis /= np.linalg.norm(axis) + 1e-12
        angle = np.deg2rad(rng.uniform(20.0, 45.0))
        for sign, share in ((1.0, 1.0), (-1.0, 0.8)):
            child = _rotate(direction, axis, sign * share * angle)
            stack.append((end, child, radius * 0.79, length * rng.uniform(0.65, 0.85), generation + 1))
    return segments


def _rotate(vector: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``vector`` about unit ``axis`` by ``angle`` radians."""
    return (vector * np.cos(angle) + np.cross(axis, vector) * np.sin(angle)
            + axis * np.dot(axis, vector) * (1.0 - np.cos(angle)))


def rasterize_tubes(
    segments: list[TubeSegment], grid: Grid, center_mm_zyx, radius_offset_mm: float = 0.0, radius_factor: float = 1.0
) -> np.ndarray:
    """Partial-volume occupancy of a union of tubes on ``grid``.

    Each segment contributes ``clip(0.5 - (dist - r) / L, 0, 1)`` with dist the distance to the segment's axis and L
    the voxel extent along the radial direction (see ``grids.box_partial_volume``); the union takes the maximum.

    Args:
        segments: Tubes in local mm.
        grid: Target grid.
        center_mm_zyx: Physical position of the local origin.
        radius_offset_mm: Added to every radius (for airway walls).
        radius_factor: Multiplies every radius before the offset.

    Returns:
        float32 occupancy in [0, 1], shape ``grid.shape_zyx``.
    """
    occupancy = np.zeros(grid.shape_zyx, dtype=np.float32)
    spacing = np.array(grid.spacing_mm_zyx)
    origin = np.array(grid.origin_mm_zyx) - np.asarray(center_mm_zyx)
    shape = np.array(grid.shape_zyx)
    for seg in segments:
        radius = seg.radius_mm * radius_factor + radius_offset_mm
        p0, p1 = np.array(seg.start_zyx), np.array(seg.end_zyx)
        low = np.floor((np.minimum(p0, p1) - radius - spacing - origin) / spacing).astype(int)
        high = np.ceil((np.maximum(p0, p1) + radius + spacing - origin) / spacing).astype(int) + 1
        low, high = np.clip(low, 0, shape), np.clip(high, 0, shape)
        if np.any(high <= low):
            continue
        coords = [origin[i] + spacing[i] * np.arange(low[i], high[i]) for i in range(3)]
        pz, py, px = coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :]
        axis = p1 - p0
        length2 = float(axis @ axis) + 1e-12
        t = np.clip(((pz - p0[0]) * axis[0] + (py - p0[1]) * axis[1] + (px - p0[2]) * axis[2]) / length2, 0.0, 1.0)
        rz, ry, rx = pz - (p0[0] + t * axis[0]), py - (p0[1] + t * axis[1]), px - (p0[2] + t * axis[2])
        dist = np.sqrt(rz * rz + ry * ry + rx * rx) + 1e-6
        extent = (np.abs(rz) * spacing[0] + np.abs(ry) * spacing[1] + np.abs(rx) * spacing[2]) / dist
        occ = np.clip(0.5 - (dist - radius) / np.maximum(extent, 0.3 * spacing.min()), 0.0, 1.0)
        view = occupancy[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        np.maximum(view, occ.astype(np.float32), out=view)
    return occupancy


def central_airways(anatomy: Anatomy) -> list[TubeSegment]:
    """Trachea (from above the apex to the carina) and the two main bronchi (carina to each hilum)."""
    a = anatomy
    carina = (0.70 * a.lung_height, 0.0, 0.0)
    top = (1.2 * a.lung_height, 0.0, 0.0)
    radius = 8.0 * a.scale_xy + 0.8
    segments = [TubeSegment(top, carina, radius, 0)]
    for side in (-1, 1):
        segments.append(TubeSegment(carina, a.hilum_zyx[side], 0.75 * radius, 0))
    return segments


def parenchyma_tissue_fraction(
    anatomy: Anatomy, grid: Grid, center_mm_zyx, texture: np.ndarray
) -> np.ndarray:
    """Tissue fraction tau of healthy parenchyma at exhale, before defects.

    tau = tau_0 (1 + g * y_n) (1 + 0.25 exp(-|x - hilum|^2 / (2 (25 mm s)^2))) (1 + 0.08 texture), where y_n in
    [-1, 1] is the normalised antero-posterior position (gravity-dependent density gradient of a supine subject),
    the second factor is the denser perihilar region and the texture is correlated noise (parenchymal structure).

    Args:
        anatomy: The subject's anatomy.
        grid: CT grid.
        center_mm_zyx: Physical position of the local origin.
        texture: Standardised correlated noise on ``grid``.

    Returns:
        float32 array, shape ``grid.shape_zyx``.
    """
    a = anatomy
    z, y, x = grid.mesh_mm_zyx()
    z, y, x = z - center_mm_zyx[0], y - center_mm_zyx[1], x - center_mm_zyx[2]
    y_norm = np.clip((y - a.lung_center_y) / a.lung_radius_y, -1.0, 1.0)
    perihilar = np.zeros(grid.shape_zyx, dtype=np.float32)
    width = 25.0 * a.scale_iso
    for side in (-1, 1):
        hz, hy, hx = a.hilum_zyx[side]
        perihilar = np.maximum(perihilar, np.exp(-((z - hz) ** 2 + (y - hy) ** 2 + (x - hx) ** 2) / (2 * width**2)))
    tau = a.tissue_fraction * (1.0 + a.gravity_gradient * y_norm) * (1.0 + 0.25 * perihilar) * (1.0 + 0.08 * texture)
    return tau.astype(np.float32)
