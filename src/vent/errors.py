"""The errors vent raises for problems a user can fix.

Every error carries a message that names the file or config key at fault and what to do about it. The CLI prints
the message (no traceback unless ``--debug``) and exits with ``exit_code``.
"""

from __future__ import annotations


class VentError(Exception):
    """Base class of every error a user can act on."""

    exit_code = 1


class ConfigError(VentError):
    """The YAML config (or a CLI option) is invalid: unknown key, bad value, wrong type."""

    exit_code = 2


class DataError(VentError):
    """Input data is missing or inconsistent: missing file, shape/spacing mismatch, empty mask, NaN."""

    exit_code = 1


class ArtifactError(VentError):
    """A stage artifact is missing, stale or inconsistent with the run (e.g. a fold split that does not match)."""

    exit_code = 1
