"""The registration cache of the CT-ventilation rows: one file per case and registration setting.

``train/registration/<key>/<case>.h5`` (``vent.io.layout.registration_file``; ``key`` is a short hash of the
registration settings, ``vent.baselines.ctvi.registration_key``), written once by the first CT-ventilation row that
needs it and read by every other row with the same settings::

    /displacement    (3, Z, Y, X) float32  u of the exhale -> inhale registration (fixed = exhale), mm, components
                                           along the grid's array axes (z, y, x) (``vent.baselines.registration``)
    /warped_inhale   (Z, Y, X) float32     the inhale CT warped onto the exhale grid, HU_in(x + u(x))
    /to_average      (3, Z, Y, X) float32  only with ``map_to: average``: u of the average -> exhale registration
                                           (fixed = average CT, moving = exhale), same frame
    attrs: format_version, case_id, key, source_fingerprint (the preprocessed case's ``fingerprint``), backend,
           fixed_phase, moving_phase (analysis phase order), seconds, seconds_to_average, params and details (JSON),
           grid (``vent.io.images.Grid``)

A file is reused only when its content verifies against its seal (``vent.io.seals``) and its format, key, case and
source fingerprint all match; anything else (another format,
settings, case or preprocessing; an unreadable file) makes :func:`read_case_registration` return None, and the row
registers again and overwrites it. Files are written atomically, so two rows writing the same case leave one whole
file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vent.errors import ArtifactError
from vent.io.artifacts import check_format
from vent.io.atomic import atomic_path
from vent.io.images import Grid

__all__ = ["REGISTRATION_FORMAT", "CaseRegistration", "write_case_registration", "read_case_registration"]

log = logging.getLogger(__name__)

REGISTRATION_FORMAT = 1
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


@dataclass
class CaseRegistration:
    """A case's registration as the CT-ventilation rows use it (module docstring for the fields' meaning).

    Attributes:
        case_id: The case.
        key: The registration settings' key.
        source_fingerprint: The fingerprint of the preprocessed case it was computed from.
        grid: The analysis grid (the exhale and average CT share it).
        displacement_zyx: (3, Z, Y, X) float32 mm, exhale -> inhale.
        warped_inhale_zyx: (Z, Y, X) float32 HU.
        seconds: Wall time of the exhale -> inhale registration.
        to_average_zyx: (3, Z, Y, X) float32 mm, average -> exhale, or None (``map_to: exhale``).
        attrs: backend, fixed_phase, moving_phase, seconds_to_average, params, details.
    """

    case_id: str
    key: str
    source_fingerprint: str
    grid: Grid
    displacement_zyx: np.ndarray
    warped_inhale_zyx: np.ndarray
    seconds: float
    to_average_zyx: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def write_case_registration(path: Path, registration: CaseRegistration) -> None:
    """Write the cache file atomically (layout in the module docstring)."""
    shape = registration.displacement_zyx.shape
    chunks = (1, min(shape[1], 32), min(shape[2], 64), min(shape[3], 64))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("displacement", data=registration.displacement_zyx.astype(np.float32), chunks=chunks,
                              **_COMPRESSION)
        handle.create_dataset("warped_inhale", data=registration.warped_inhale_zyx.astype(np.float32),
                              chunks=chunks[1:], **_COMPRESSION)
        if registration.to_average_zyx is not None:
            handle.create_dataset("to_average", data=registration.to_average_zyx.astype(np.float32), chunks=chunks,
                                  **_COMPRESSION)
        attrs = {
            "format_version": REGISTRATION_FORMAT,
            "case_id": registration.case_id,
            "key": registration.key,
            "source_fingerprint": registration.source_fingerprint,
            "seconds": float(registration.seconds),
            **registration.grid.to_attrs(),
        }
        for name, value in registration.attrs.items():
            attrs[name] = json.dumps(value, default=str) if isinstance(value, (dict, list)) else value
        for name, value in attrs.items():
            if value is not None:
                handle.attrs[name] = value


def read_case_registration(path: Path, key: str, case_id: str, source_fingerprint: str) -> CaseRegistration | None:
    """The cached registration at ``path``, or None when it is absent, unreadable or belongs to another format, key,
    case or preprocessed case (the reason is logged; the caller registers again)."""
    from vent.io.seals import verify_artifact

    path = Path(path)
    if not path.is_file():
        return None
    if (problem := verify_artifact(path, case_id=case_id)) is not None:
        log.info("registration cache %s %s: registering again", path, problem)
        return None
    try:
        with h5py.File(path, "r") as handle:
            attrs = {name: _plain(value) for name, value in handle.attrs.items()}
            check_format(path, attrs, REGISTRATION_FORMAT, "train")
            stale = _stale_reason(attrs, key, case_id, source_fingerprint)
            if stale:
                log.info("registration cache %s is stale (%s): registering again", path, stale)
                return None
            to_average = handle["to_average"][...] if "to_average" in handle else None
            return CaseRegistration(
                case_id=case_id,
                key=key,
                source_fingerprint=source_fingerprint,
                grid=Grid.from_attrs(attrs),
                displacement_zyx=handle["displacement"][...],
                warped_inhale_zyx=handle["warped_inhale"][...],
                seconds=float(attrs["seconds"]),
                to_average_zyx=to_average,
                attrs={name: _json_or_value(attrs[name]) for name in _EXTRA_ATTRS if name in attrs},
            )
    except (OSError, KeyError, ArtifactError) as error:
        log.info("registration cache %s cannot be used (%s): registering again", path, error)
        return None


_EXTRA_ATTRS = ("backend", "fixed_phase", "moving_phase", "seconds_to_average", "params", "details")


def _stale_reason(attrs: dict[str, Any], key: str, case_id: str, source_fingerprint: str) -> str:
    """Why a cache file does not belong to this (key, case, preprocessed case); empty when it does."""
    expected = {"key": key, "case_id": case_id, "source_fingerprint": source_fingerprint}
    return ", ".join(f"{name} {attrs.get(name)!r} != {value!r}" for name, value in expected.items()
                     if str(attrs.get(name)) != str(value))


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_or_value(value: Any) -> Any:
    """A JSON-encoded attribute decoded; any other value as it is."""
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    return value
