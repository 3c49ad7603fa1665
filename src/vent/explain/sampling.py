"""Which voxels to explain: a stratified sample (defect and healthy, every patient), sized in the config."""

from __future__ import annotations

import logging
import zlib

import numpy as np

from vent.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def stratified_voxel_sample(
    labels_per_case: dict[str, np.ndarray], n_per_class_per_case: int, seed: int
) -> dict[str, np.ndarray]:
    """Draw up to ``n_per_class_per_case`` voxels of each class (healthy 0, defect 1) from every patient.

    A class with fewer voxels contributes all of them (logged). Each patient's draw is seeded by (seed, case id), so
    adding or removing a patient does not change the others' samples.

    Args:
        labels_per_case: Ground-truth label per voxel, shape (n_voxels,), for each case id.
        n_per_class_per_case: Voxels per class per patient (>= 1).
        seed: Seed of the random generator.

    Returns:
        Sorted voxel indices into each case's arrays, for each case id (same keys and order).
    """
    if n_per_class_per_case < 1:
        raise ConfigError(f"explain.n_per_class_per_case must be >= 1; got {n_per_class_per_case}.")
    sample: dict[str, np.ndarray] = {}
    for case_id, labels in labels_per_case.items():
        labels = np.asarray(labels).reshape(-1)
        if not np.isin(labels, (0, 1)).all():
            raise DataError(f"labels of case {case_id!r} must contain only 0 (healthy) and 1 (defect).")
        rng = np.random.default_rng([seed, zlib.crc32(case_id.encode())])
        picked = []
        for cls in (0, 1):
            members = np.flatnonzero(labels == cls)
            if len(members) < n_per_class_per_case:
                logger.warning(
                    "case %s has only %d voxels of class %d (wanted %d); taking all",
                    case_id,
                    len(members),
                    cls,
                    n_per_class_per_case,
                )
                picked.append(members)
            else:
                picked.append(rng.choice(members, size=n_per_class_per_case, replace=False))
        sample[case_id] = np.sort(np.concatenate(picked)).astype(np.int64)
    return sample
