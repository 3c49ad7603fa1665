"""Planning, skipping and resuming stages.

The stage contract (see ``vent.stages.base.Stage``): a stage declares its ``name`` (also its config section, output
folder and CLI flag), the extra config ``sections`` it reads, the stages it ``needs`` and a ``version``. Its
fingerprint is the SHA-256 of

    {stage, version, config sections, upstream fingerprints, input identity}

checked cheapest first (DVC's order): definition (version, config), then upstream, then inputs, then outputs. A stage
is *current* when its manifest (written last, atomically) holds the same fingerprint and its outputs exist; then it
is skipped with a reason. Per-case stages also stamp each ``<case>.h5`` with the case's own fingerprint, so an
interrupted stage resumes at the first case not yet written.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from vent import __version__
from vent.config import RunConfig
from vent.errors import ArtifactError, ConfigError
from vent.io import layout
from vent.io.atomic import clean_temporaries, write_json
from vent.io.hashing import HashCache

__all__ = ["Progress", "RunContext", "StagePlan", "plan_run", "execute_plan", "fingerprint_of", "diff_keys"]

log = logging.getLogger(__name__)


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Progress(Protocol):
    """What library code needs to show progress; the CLI supplies a rich-backed implementation."""

    def task(self, description: str, total: float | None) -> AbstractContextManager[ProgressTask]: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass


class NullProgress:
    """Progress that shows nothing (library default and tests)."""

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[_NullTask]:
        yield _NullTask()


@dataclass
class RunContext:
    """Everything a stage needs at run time."""

    config: RunConfig
    progress: Progress = field(default_factory=NullProgress)
    hash_cache: HashCache | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] = lambda message: log.info(message)

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    def stage_dir(self, stage: str) -> Path:
        return layout.stage_dir(self.run_dir, stage)

    def case_file(self, stage: str, case: str) -> Path:
        """The per-case artifact ``<run_dir>/<stage>/<case>.h5`` (``vent.io.layout.case_file``)."""
        return layout.case_file(self.run_dir, stage, case)

    def hashes(self) -> HashCache:
        if self.hash_cache is None:
            self.hash_cache = HashCache(layout.hash_cache_file(self.run_dir))
        return self.hash_cache


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def fingerprint_of(definition: dict[str, Any], inputs: dict[str, Any]) -> str:
    """SHA-256 of a definition and an input identity: the one fingerprint of stages, cases and folds."""
    return _sha({"definition": definition, "inputs": inputs})


@dataclass
class StagePlan:
    """What a run will do with one stage, and why."""

    stage: Any
    definition: dict[str, Any]
    inputs: dict[str, Any]
    fingerprint: str
    action: str  # "run" | "skip" | "blocked" | "off" (the config does not use the stage)
    reason: str
    state: str  # "current" | "stale" | "never run" | "incomplete" | "blocked" | "not used"


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees, as ``key (old -> new)``."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        out: list[str] = []
        for key in keys:
            out += diff_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [f"{prefix} ({old!r} -> {new!r})" if prefix else repr(new)]


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """A stage folder's manifest, or None when the stage never finished there."""
    path = layout.manifest_file(stage_dir.parent, stage_dir.name)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _stale_reason(manifest: dict[str, Any], definition: dict[str, Any], inputs: dict[str, Any]) -> str:
    old = manifest.get("definition", {})
    if old.get("version") != definition["version"]:
        return f"stage version changed ({old.get('version')} -> {definition['version']})"
    changed = diff_keys(old.get("config", {}), definition["config"])
    if changed:
        return "config changed: " + ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
    upstream = [k for k in definition["upstream"] if old.get("upstream", {}).get(k) != definition["upstream"][k]]
    if upstream:
        return "upstream changed: " + ", ".join(upstream)
    old_inputs = manifest.get("inputs", {})
    if old_inputs != inputs:
        added = sorted(set(inputs) - set(old_inputs))
        removed = sorted(set(old_inputs) - set(inputs))
        modified = sorted(k for k in set(inputs) & set(old_inputs) if inputs[k] != old_inputs[k])
        parts = [
            f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
            for label, items in (("added", added), ("removed", removed), ("changed", modified))
            if items
        ]
        return "inputs changed (" + "; ".join(parts) + ")"
    return "fingerprint changed"


def plan_run(
    ctx: RunContext, stages: list[Any], *, only: str | None = None, start: str | None = None, force: bool = False
) -> list[StagePlan]:
    """Decide for every stage whether it runs, and why; computes fingerprints in pipeline order.

    Args:
        only: run just this stage (its upstream must be current).
        start: force this stage and run every later stage.
        force: re-run every selected stage even if current.
    """
    names = [s.name for s in stages]
    unused = {s.name: s.unused_reason(ctx.config) for s in stages}
    for flag, value in (("--only", only), ("--from", start)):
        if value is not None and value not in names:
            close = difflib.get_close_matches(value, names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{flag} {value!r} is not a stage{hint} (stages: {', '.join(names)})")
    plans: list[StagePlan] = []
    rerun: set[str] = set()
    for stage in stages:
        if unused[stage.name] is not None:
            plans.append(StagePlan(stage, {}, {}, "", "off", unused[stage.name], "not used"))
            continue
        upstream = {need: ctx.fingerprints[need] for need in stage.needs_for(ctx.config)}
        definition = {**stage.definition(ctx), "upstream": upstream}
        try:
            inputs = stage.input_identity(ctx)
        except ArtifactError as error:
            inputs = {"unavailable": str(error)}
        fingerprint = fingerprint_of(definition, inputs)
        ctx.fingerprints[stage.name] = fingerprint
        manifest = read_manifest(ctx.stage_dir(stage.name))
        if manifest is None:
            partial = ctx.stage_dir(stage.name).is_dir() and any(ctx.stage_dir(stage.name).iterdir())
            state, reason = (
                ("incomplete", "an earlier run stopped before finishing") if partial else ("never run", "never run")
            )
        elif manifest.get("fingerprint") != fingerprint:
            state, reason = "stale", _stale_reason(manifest, definition, inputs)
        elif missing := stage.missing_outputs(ctx):
            state, reason = "stale", f"outputs missing: {', '.join(missing[:3])}"
        else:
            state, reason = "current", "fingerprint unchanged"
        selected = only is None or stage.name == only
        forced = force or (start is not None and names.index(stage.name) >= names.index(start))
        upstream_rerun = [n for n in stage.needs_for(ctx.config) if n in rerun]
        if not selected:
            action = "skip" if state == "current" else "blocked"
            if action == "blocked":
                reason = f"{reason}; not selected by --only {only}"
        elif forced:
            action, reason = "run", "forced" + (f" ({reason})" if state != "current" else "")
        elif upstream_rerun and state == "current":
            action, reason = "run", f"upstream re-runs: {', '.join(upstream_rerun)}"
        elif state == "current":
            action = "skip"
        else:
            action = "run"
        if action == "run":
            rerun.add(stage.name)
        plans.append(StagePlan(stage, definition, inputs, fingerprint, action, reason, state))
    if only is not None:
        if unused[only] is not None:
            raise ConfigError(f"--only {only}: this config does not use the {only} stage ({unused[only]})")
        by_name = {s.name: s for s in stages}
        closure: set[str] = set()
        pending = list(by_name[only].needs_for(ctx.config))
        while pending:
            name = pending.pop()
            if name not in closure:
                closure.add(name)
                pending += list(by_name[name].needs_for(ctx.config))
        for plan in plans:
            if plan.stage.name in closure and plan.state != "current":
                raise ArtifactError(
                    f"cannot run --only {only}: upstream stage '{plan.stage.name}' is {plan.state} ({plan.reason}); "
                    f"run `vent run CONFIG --from {plan.stage.name}` or without --only"
                )
    return plans


PROVENANCE_PACKAGES = {
    "numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK", "h5py": "h5py", "torch": "torch",
    "captum": "captum", "sklearn": "scikit-learn", "numba": "numba", "pydantic": "pydantic", "monai": "monai",
    "itk-elastix": "itk-elastix", "matplotlib": "matplotlib",
}
"""The libraries whose versions shape results: ``{name shown: installed distribution}``."""


def provenance() -> dict[str, Any]:
    """Versions of vent and the libraries that shape results (from the installed distributions' metadata, so no
    heavy import), the host and the platform."""
    from importlib import metadata

    versions: dict[str, Any] = {"vent": __version__, "python": platform.python_version()}
    for name, distribution in PROVENANCE_PACKAGES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:  # an optional library that is not installed
            versions[name] = None
    return {"versions": versions, "host": platform.node(), "platform": platform.platform()}


def execute_plan(ctx: RunContext, plans: list[StagePlan]) -> list[dict[str, Any]]:
    """Run the planned stages in order; write each manifest last. Returns a summary row per stage."""
    summary = []
    for plan in plans:
        stage = plan.stage
        if plan.action == "off":
            summary.append({"stage": stage.name, "action": "off", "reason": plan.reason, "seconds": 0.0})
            continue
        if plan.action != "run":
            ctx.echo(
                f"[{stage.name}] skipped: {plan.reason}"
                if plan.action == "skip"
                else f"[{stage.name}] not run: {plan.reason}"
            )
            summary.append({"stage": stage.name, "action": plan.action, "reason": plan.reason, "seconds": 0.0})
            continue
        ctx.echo(f"[{stage.name}] runs: {plan.reason}")
        stage_dir = ctx.stage_dir(stage.name)
        layout.manifest_file(ctx.run_dir, stage.name).unlink(missing_ok=True)
        stage_dir.mkdir(parents=True, exist_ok=True)
        clean_temporaries(stage_dir)
        started = time.time()
        outputs = stage.run(ctx, plan)
        seconds = time.time() - started
        config_hash = _sha(json.loads(ctx.config.model_dump_json()))
        manifest = {
            "stage": stage.name,
            "fingerprint": plan.fingerprint,
            "definition": plan.definition,
            "inputs": plan.inputs,
            "outputs": outputs or {},
            "provenance": {
                **provenance(),
                "config_file": str(ctx.config.source) if ctx.config.source else None,
                "config_sha256": config_hash,
                "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
                "seconds": round(seconds, 3),
            },
        }
        write_json(layout.manifest_file(ctx.run_dir, stage.name), manifest)
        ctx.hashes().save()
        ctx.echo(f"[{stage.name}] done in {seconds:.1f} s")
        summary.append({"stage": stage.name, "action": "run", "reason": plan.reason, "seconds": seconds})
    return summary
