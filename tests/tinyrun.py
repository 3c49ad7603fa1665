"""A tiny synthetic run for stage tests (importable as `tinyrun`; tests/ is on pythonpath): its settings, a config
builder, a copy helper and plan/run helpers over fresh stage objects. The fixtures are in tests/stages/conftest.py."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UPSTREAM = ("preprocess", "split", "radiomics", "select", "train", "evaluate", "explain")
"""The stages the tiny run goes through (report is left out: its tests build their own inputs)."""

FEATURES = [
    "intensity_mean",
    "intensity_variance",
    "intensity_p10",
    "intensity_p90",
    "intensity_energy",
    "glcm_contrast",
    "glcm_correlation",
    "glcm_joint_entropy",
    "glcm_inverse_difference",
    "glrlm_short_run_emphasis",
    "glrlm_grey_level_non_uniformity",
    "glrlm_run_entropy",
]
"""The radiomic features of the tiny run, in Table 1 order (the order of the radiomics files' feature axis)."""

TINY: dict[str, Any] = {
    "data": {"synthetic": {"cases": 4, "modality": "pet", "size": "tiny", "seed": 3}},
    "radiomics": {"features": FEATURES},
    "select": {"max_voxels_per_case": 2000},
    "cv": {"n_folds": 2, "val_fraction": 0.5},
    "train": {
        "models": {"lstm": {"hidden": [8]}, "lstm_raw": {"hidden": [8]}},
        "compare_selection_modes": False,
        "lr": 0.003,
        "batch_size": 256,
        "max_epochs": 2,
        "patience": 10,
        "max_voxels_per_case": 600,
    },
    "explain": {"n_steps": 8, "max_steps": 64, "voxels_per_class_per_case": 6},
    "execution": {"device": "cpu", "threads": 1, "workers": 1},
}
"""The tiny run's settings (data.root and run_dir are added per run); 4 patients, 2 folds of 1/1/2 patients."""


def merge(base: dict[str, Any], changes: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, section by section (a value None removes the key)."""
    out = copy.deepcopy(base)
    for key, value in (changes or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key != "models":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_config(run_dir: Path, data_root: Path, changes: dict[str, Any] | None = None) -> Any:
    """The validated tiny config for a run folder (absolute paths, so every copy reads the same data)."""
    from vent.config import config_from_dict

    raw = merge(TINY, changes)
    raw["run_dir"] = str(run_dir)
    raw["data"] = {**raw["data"], "root": str(data_root)}
    return config_from_dict(raw, Path(run_dir).parent)


def run_stages(config: Any, names=UPSTREAM, **plan_options: Any) -> tuple[list[Any], list[str]]:
    """Plan and execute fresh instances of the stages ``names`` (in pipeline order); returns (plans, messages)."""
    from vent.runner import RunContext, execute_plan, plan_run
    from vent.stages import get_stage

    messages: list[str] = []
    ctx = RunContext(config=config, echo=messages.append)
    plans = plan_run(ctx, [get_stage(name) for name in names], **plan_options)
    execute_plan(ctx, plans)
    return plans, messages


def plan_stages(config: Any, names=UPSTREAM, **plan_options: Any) -> tuple[list[Any], Any]:
    """Plan without running; returns (plans, the context holding the planned fingerprints)."""
    from vent.runner import RunContext, plan_run
    from vent.stages import get_stage

    ctx = RunContext(config=config, echo=lambda message: None)
    return plan_run(ctx, [get_stage(name) for name in names], **plan_options), ctx


def by_stage(plans: list[Any]) -> dict[str, Any]:
    return {plan.stage.name: plan for plan in plans}


@dataclass(frozen=True)
class TinyRun:
    """A finished tiny run: its folder, the (shared, read-only) synthetic cohort and the run's config."""

    run_dir: Path
    data_root: Path

    def config(self, changes: dict[str, Any] | None = None) -> Any:
        return tiny_config(self.run_dir, self.data_root, changes)

    def copy(self, tmp_path: Path) -> TinyRun:
        """A copy of the run folder under ``tmp_path`` reading the same cohort: change settings there only."""
        target = Path(tmp_path) / "run"
        shutil.copytree(self.run_dir, target)
        return TinyRun(target, self.data_root)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file and folder under ``folder``: equal snapshots = nothing was changed."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if not p.name.endswith(".seal.json")  # a check may refresh a seal's cached stat (vent.io.seals), nothing else
    }
