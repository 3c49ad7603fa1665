"""Volumes for viewers (3D Slicer, ITK-SNAP): NIfTI files on a case's analysis grid, written or linked atomically.

Arrays are (z, y, x); the grid (``vent.io.images.Grid``) gives spacing, origin and direction, so every volume of a
patient overlays the others in a viewer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from vent.errors import ArtifactError
from vent.io.atomic import atomic_path
from vent.io.images import Grid

__all__ = ["write_volume", "link_volume"]


def write_volume(path: Path, array_zyx: np.ndarray, grid: Grid) -> Path:
    """Write ``array_zyx`` as a NIfTI volume on ``grid`` (its dtype kept), atomically."""
    import SimpleITK as sitk

    from vent.io.images import image_from_array

    with atomic_path(path) as tmp:
        sitk.WriteImage(image_from_array(np.asarray(array_zyx), grid), str(tmp), useCompression=True)
    return Path(path)


def link_volume(source: Path, target: Path) -> str:
    """Make ``target`` the file ``source``, without copying where the filesystem allows: a hard link (same bytes,
    no space), else a copy; either appears atomically. Returns "linked" or "copied".

    Raises:
        ArtifactError: ``source`` is missing (name the stage that writes it).
    """
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise ArtifactError(f"{source} is missing; re-run the stage that writes it (vent run CONFIG --from train)")
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
            how = "linked"
        except OSError:  # another filesystem, or one without hard links: same content, more space
            shutil.copy2(source, tmp)
            how = "copied"
    return how
