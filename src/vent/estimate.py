"""Know the cost before you pay it: each stage's time for the cohort at hand, from rates measured on this machine.

Three parts:

- **Pure estimates** (:func:`estimate_stages`): cohort size facts (:class:`CohortFacts`: lung voxels per patient
  on the analysis grid, phases, folds, the training rows and their settings) and measured rates (:class:`Rates`)
  give seconds per stage:

  - radiomics = sum_c N_c T * r_rad / P, with r_rad the seconds per voxel-phase of the real engine (configured
    kernel, bins, engine, at the per-task thread count) and P the tasks run at once (``execution.backend`` and
    ``workers``, at most the cases x phases: a task per case and phase);
  - train, per sequence row and fold = E (S_train / r_train + S_val / r_infer) + (N_val + N_test) / r_infer, with
    E = ``train.max_epochs`` (an upper bound: early stopping can end sooner), S the voxels per epoch after
    ``train.max_voxels_per_case``, r_train / r_infer the row's measured training / inference samples per second;
    the sum over rows and folds divided by the folds run at once (as P);
    rows of other families (forest, volume networks, registration, rules) are listed as not estimated;
  - explain = V k / r_ig per fold, V the voxels explained (``explain.voxels_per_class_per_case`` of each class per
    test patient, plus the randomisation check's), r_ig the measured (voxel x IG step) rate of the reference model,
    k between ``explain.n_steps`` (every voxel converges at once: the low estimate) and n_steps + 2 n_steps + ... +
    ``explain.max_steps`` (every voxel refined to the cap: the high estimate).

- **Calibration** (:func:`calibrate`): measures those rates here, once: the radiomics engine on a small synthetic
  lung block, each sequence row's network on random data (Adam steps and forward passes), Integrated Gradients on
  the reference network, each the best of a few timings, in CPU time when the task runs on one thread (so a busy
  shared machine does not inflate the figures; the estimate is of the machine, a busy one takes longer), else in
  wall time. The rates are cached in ``layout.calibration_file()`` (the user's cache folder: every
  run on the machine shares them) with the machine (host, CPU, cores, torch, its threads and device) and the date
  of each measurement; a cache from another machine is measured again.

- **Cohort facts** (:func:`cohort_facts`): lung voxels per patient from the radiomics files when present, else the
  preprocessed analysis masks, else the input lung masks' voxel counts rescaled to the analysis grid's voxel size.

Preprocess, split, select, evaluate and report take seconds to a few minutes and are not estimated.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "CohortFacts",
    "RowFacts",
    "Rates",
    "StageEstimate",
    "estimate_stages",
    "ig_step_range",
    "format_seconds",
    "calibrate",
    "cohort_facts",
    "machine_identity",
]

CALIBRATION_FORMAT = 2
ASSUMED_SELECTED_FEATURES = 20
"""Inputs per phase of a radiomic row before selection has run (its cost grows little with them)."""
RANDOMISATION_VOXELS = 64  # vent.stages.explain.RANDOMISATION_VOXELS, explained once more per fold with a random net


@dataclass(frozen=True)
class RowFacts:
    """One sequence row of Table 2, as its cost needs it: a calibration key and its inputs per phase."""

    row: str
    model: str
    params: dict[str, Any]
    n_inputs: int

    @property
    def key(self) -> str:
        """Identity of the measured network (name, parameters, inputs per phase)."""
        return f"{self.model}:{json.dumps(self.params, sort_keys=True)}:F{self.n_inputs}"


@dataclass(frozen=True)
class CohortFacts:
    """The size facts an estimate needs.

    Attributes:
        voxels: Lung voxels per patient on the analysis grid (``case -> N_c``).
        n_phases: Phases T.
        n_folds: Cross-validation folds K (each patient is a test patient once).
        val_fraction: Share of a fold's non-test patients used for validation.
        rows: The sequence rows trained (others are listed in ``other_rows``).
        other_rows: Rows whose cost is not estimated (forest, volume networks, registration, rules).
        max_epochs, max_voxels_per_case, batch_size: From the ``train`` section.
        explain_voxels_per_class: ``explain.voxels_per_class_per_case``.
        explain_steps: (``explain.n_steps``, ``explain.max_steps``).
        reference: The explained row (``None`` when explain does not run).
        source: Where the voxel counts came from (radiomics, preprocess, input masks).
        parallel_tasks: Tasks (radiomics phases, training folds) run at once (``execution.backend`` and
            ``workers``: 1 for ``serial``); each at the per-task thread count the rates were measured with.
    """

    voxels: dict[str, int]
    n_phases: int
    n_folds: int
    val_fraction: float
    rows: list[RowFacts]
    other_rows: list[str] = field(default_factory=list)
    max_epochs: int = 500
    max_voxels_per_case: int | None = None
    batch_size: int = 2048
    explain_voxels_per_class: int = 200
    explain_steps: tuple[int, int] = (32, 512)
    reference: RowFacts | None = None
    source: str = ""
    parallel_tasks: int = 1


@dataclass(frozen=True)
class Rates:
    """Measured rates (:func:`calibrate`).

    Attributes:
        radiomics_s_per_voxel_phase: Engine seconds per (voxel x phase), all features, configured workers.
        train_samples_per_s: Row key -> training samples per second (forward, backward, Adam step).
        infer_samples_per_s: Row key -> forward-only samples per second.
        ig_voxel_steps_per_s: Row key -> explained (voxel x IG step) per second.
    """

    radiomics_s_per_voxel_phase: float | None = None
    train_samples_per_s: dict[str, float] = field(default_factory=dict)
    infer_samples_per_s: dict[str, float] = field(default_factory=dict)
    ig_voxel_steps_per_s: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StageEstimate:
    """A stage's estimated seconds: ``low`` and ``high`` (equal unless a range is stated) and how they were got."""

    stage: str
    low: float | None
    high: float | None
    basis: str


def ig_step_range(n_steps: int, max_steps: int) -> tuple[int, int]:
    """IG steps per voxel: at least ``n_steps``; at most n_steps + 2 n_steps + ... up to ``max_steps`` (the
    steps double per refinement, ``vent.explain.explain_sample``)."""
    total, steps = n_steps, n_steps
    while steps < max_steps:
        steps = min(2 * steps, max_steps)
        total += steps
    return n_steps, total


def _fold_patients(facts: CohortFacts) -> tuple[float, float, float]:
    """Mean (train, val, test) patients per fold: n / K tested, the rest split by ``val_fraction`` (>= 1 each)."""
    n = len(facts.voxels)
    test = n / facts.n_folds
    val = max(1.0, round((n - test) * facts.val_fraction))
    return max(1.0, n - test - val), val, test


def _train_seconds(facts: CohortFacts, rates: Rates, row: RowFacts) -> float | None:
    if row.key not in rates.train_samples_per_s or row.key not in rates.infer_samples_per_s:
        return None
    n = len(facts.voxels)
    mean_voxels = sum(facts.voxels.values()) / n
    sampled = sum(min(v, facts.max_voxels_per_case or v) for v in facts.voxels.values()) / n
    n_train, n_val, n_test = _fold_patients(facts)
    train_rate, infer_rate = rates.train_samples_per_s[row.key], rates.infer_samples_per_s[row.key]
    per_epoch = n_train * sampled / train_rate + n_val * sampled / infer_rate
    predictions = (n_val + n_test) * mean_voxels / infer_rate
    return facts.n_folds * (facts.max_epochs * per_epoch + predictions)


def _explain_seconds(facts: CohortFacts, rates: Rates) -> tuple[float, float] | None:
    reference = facts.reference
    if reference is None or reference.key not in rates.ig_voxel_steps_per_s:
        return None
    per_case = [min(v, 2 * facts.explain_voxels_per_class) for v in facts.voxels.values()]
    voxels = sum(per_case) + facts.n_folds * RANDOMISATION_VOXELS
    low, high = ig_step_range(*facts.explain_steps)
    rate = rates.ig_voxel_steps_per_s[reference.key]
    return voxels * low / rate, voxels * high / rate


def estimate_stages(facts: CohortFacts, rates: Rates, stages: tuple[str, ...] = ("radiomics", "train", "explain"),
                    ) -> list[StageEstimate]:
    """Seconds per stage from cohort facts and rates (module docstring); ``None`` where a rate is missing.

    Args:
        facts: The cohort's size facts.
        rates: Measured rates.
        stages: The stages the run uses (others are left out).

    Returns:
        One :class:`StageEstimate` per stage of ``stages`` that is estimated, in pipeline order.
    """
    voxel_phases = sum(facts.voxels.values()) * facts.n_phases
    out = []
    if "radiomics" in stages:
        rate = rates.radiomics_s_per_voxel_phase
        lanes = max(1, min(facts.parallel_tasks, len(facts.voxels) * facts.n_phases))  # a task per case and phase
        seconds = None if rate is None else voxel_phases * rate / lanes
        out.append(StageEstimate("radiomics", seconds, seconds,
                                 f"{voxel_phases:,} voxel-phases x {_us(rate)} us / {lanes} task(s) at once"))
    if "train" in stages:
        per_row = {row.row: _train_seconds(facts, rates, row) for row in facts.rows}
        known = [s for s in per_row.values() if s is not None]
        lanes = max(1, min(facts.parallel_tasks, len(known) * facts.n_folds))
        total = sum(known) / lanes if known else None
        basis = (f"{len(known)} sequence row(s) x {facts.n_folds} folds x <= {facts.max_epochs} epochs, "
                 f"{lanes} fold(s) at once")
        if facts.other_rows:
            basis += f"; not estimated: {', '.join(facts.other_rows)}"
        out.append(StageEstimate("train", total, total, basis))
    if "explain" in stages:
        seconds = _explain_seconds(facts, rates)
        low, high = seconds if seconds is not None else (None, None)
        steps = ig_step_range(*facts.explain_steps)
        out.append(StageEstimate("explain", low, high, f"IG {steps[0]}-{steps[1]} steps per voxel"))
    return out


def _us(rate: float | None) -> str:
    return "?" if rate is None else f"{rate * 1e6:.0f}"


def format_seconds(seconds: float | None) -> str:
    """``~40 s``, ``~12 min``, ``~2.5 h`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------------- calibration


def machine_identity(device: str) -> dict[str, Any]:
    """What makes rates comparable: host, CPU model, cores, torch version and the device it runs on (the threads
    used are part of each measurement's key)."""
    import os
    import platform

    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    resolved = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if resolved == "cuda" else "cpu",
    }


def measure_radiomics(kernel_voxels: int, bin_count: int | None, engine: str, workers: int | None,
                      n_centres: int = 1500) -> float:
    """Seconds per voxel-phase of the real engine (all 56 features) on a synthetic lung-like block.

    A 48 x 48 x 48 block of smooth noise in HU inside an ellipsoidal mask, discretised with ``bin_count`` (64 when
    None); ``n_centres`` consecutive mask voxels, timed after a warm-up call (numba's compiled cache loaded).
    """
    import numpy as np
    from scipy import ndimage

    from vent.radiomics import FilterSettings
    from vent.radiomics.discretisation import discretise
    from vent.radiomics.engine import compute_voxel_features

    rng = np.random.default_rng(0)
    shape = (48, 48, 48)
    image = -800.0 + 150.0 * ndimage.gaussian_filter(rng.normal(size=shape), 1.5) / 0.1
    zz, yy, xx = np.indices(shape)
    mask = ((zz - 24) / 22.0) ** 2 + ((yy - 24) / 20.0) ** 2 + ((xx - 24) / 20.0) ** 2 <= 1.0
    grey, n_grey = discretise(image, mask, bin_count=bin_count or 64)
    centres = np.argwhere(mask)
    middle = len(centres) // 2
    settings = FilterSettings(kernel_voxels=kernel_voxels, bin_count=bin_count or 64, backend=engine,
                              n_workers=workers)
    compute_voxel_features(image, grey, mask, centres[middle : middle + 20], n_grey, settings)
    block = centres[middle - n_centres // 2 : middle + n_centres // 2]
    clock = _clock(workers, "cuda" if engine == "torch" else "cpu")
    best = math.inf
    for _ in range(2):
        started = clock()
        compute_voxel_features(image, grey, mask, block, n_grey, settings)
        best = min(best, clock() - started)
    return best / len(block)


def measure_network(row: RowFacts, n_steps: int, batch_size: int, device: str, n_batches: int = 2,
                    ) -> tuple[float, float]:
    """(training, inference) samples per second of a row's network on random data: Adam steps with BCE on random
    labels, then forward passes without gradients, each timed after one warm-up batch."""
    import torch

    from vent.models import build_model
    from vent.models.training import resolve_device

    target = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(row.model, row.n_inputs, n_steps, **row.params).to(target)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch_size, n_steps, row.n_inputs, device=target)
    y = (torch.rand(batch_size, device=target) < 0.3).float()

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss(model(x).reshape(-1), y).backward()
        optimiser.step()

    def infer_step() -> None:
        with torch.inference_mode():
            model(x)

    model.train()
    train_rate = _rate(train_step, n_batches, batch_size, target)
    model.eval()
    return train_rate, _rate(infer_step, n_batches, batch_size, target)


def _clock(threads: int | None, device_type: str = "cpu") -> Callable[[], float]:
    """The timer of a measurement: this process's CPU time when it runs on one CPU thread (other work on a shared
    machine then does not slow the figure down: the estimate is the machine's, not the moment's), else wall time
    (several threads, or a GPU whose work the CPU clock does not see)."""
    return time.process_time if threads == 1 and device_type == "cpu" else time.perf_counter


def _rate(step: Callable[[], None], n_batches: int, batch_size: int, device: Any, repeats: int = 3) -> float:
    """Samples per second of ``step``: two warm-up calls, then the best of ``repeats`` timings of ``n_batches``
    calls (the best, since other work on a shared machine only ever slows a timing down; timer: :func:`_clock`)."""
    import torch

    clock = _clock(torch.get_num_threads(), device.type)
    best = math.inf
    for _ in range(2):
        step()
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = clock()
        for _ in range(n_batches):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, clock() - started)
    return n_batches * batch_size / best


def measure_ig(row: RowFacts, n_steps: int, method: str, device: str, internal_batch_size: int,
               n_voxels: int = 16, ig_steps: int = 8) -> float:
    """Explained (voxel x IG step) per second of ``vent.explain.explain_sample`` on a random network and inputs."""
    import numpy as np
    import torch

    from vent.explain import explain_sample
    from vent.models import build_model
    from vent.stages.explain import resolve_explain_device

    torch.manual_seed(0)
    model = build_model(row.model, row.n_inputs, n_steps, **row.params)
    x = np.random.default_rng(0).normal(size=(n_voxels, n_steps, row.n_inputs)).astype(np.float32)
    target = resolve_explain_device(device)
    kwargs = {"method": method, "device": target, "internal_batch_size": internal_batch_size,
              "completeness_tolerance": None}
    explain_sample(model, x[:2], n_steps=2, **kwargs)
    clock = _clock(torch.get_num_threads(), torch.device(target).type)
    best = math.inf
    for _ in range(2):
        started = clock()
        explain_sample(model, x, n_steps=ig_steps, **kwargs)
        best = min(best, clock() - started)
    return n_voxels * ig_steps / best


def _load_cache(path: Path, machine: dict[str, Any]) -> dict[str, Any]:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if cached.get("format") != CALIBRATION_FORMAT or cached.get("machine") != machine:
        log.info("calibration %s is from another machine or format: measuring again", path)
        return {}
    return dict(cached.get("entries", {}))


def calibrate(
    cache_file: Path, facts: CohortFacts, config: Any, echo: Callable[[str], None] = log.info,
) -> tuple[Rates, dict[str, Any]]:
    """Rates for ``facts`` under ``config``: from the cache when measured on this machine, else measured and cached.

    Returns:
        (rates, calibration record: machine, entries with their values, dates and measuring seconds).
    """
    import torch

    execution = config.execution
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(per_task_threads(execution))  # as a worker runs a task (vent.execution.threads)
    try:
        return _calibrate(cache_file, facts, config, echo)
    finally:
        torch.set_num_threads(previous_threads)


def parallel_tasks(execution: Any) -> int:
    """Tasks run at once: 1 for the ``serial`` backend, else ``execution.workers`` (null = the cores)."""
    from vent.execution.threads import available_cores

    if execution.backend == "serial":
        return 1
    return execution.workers or available_cores()


def per_task_threads(execution: Any) -> int:
    """CPU threads of one task: ``execution.threads``, else the cores divided among the tasks run at once."""
    from vent.execution.threads import available_cores

    return execution.threads or max(1, available_cores() // parallel_tasks(execution))


def _calibrate(cache_file: Path, facts: CohortFacts, config: Any, echo: Callable[[str], None],
               ) -> tuple[Rates, dict[str, Any]]:
    import torch

    from vent.io.atomic import write_json

    execution = config.execution
    machine = machine_identity(execution.device)
    entries = _load_cache(cache_file, machine)
    measured = False
    threads = torch.get_num_threads()

    def entry(key: str, measure: Callable[[], Any]) -> Any:
        nonlocal measured
        if key not in entries:
            echo(f"calibrating {key} (once on this machine)")
            started = time.perf_counter()
            value = measure()
            entries[key] = {"value": value, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "seconds": round(time.perf_counter() - started, 2)}
            measured = True
        return entries[key]["value"]

    radiomics_rate = None
    if facts.voxels and config.radiomics.bin_width is None:
        from vent.radiomics import kernel_voxels_from_mm

        kernel = kernel_voxels_from_mm(config.radiomics.kernel_mm, config.preprocess.spacing_mm[0])
        radiomics_rate = entry(
            f"radiomics:k{kernel}:bins{config.radiomics.bin_count}:{execution.radiomics_engine}:threads{threads}",
            lambda: measure_radiomics(kernel, config.radiomics.bin_count, execution.radiomics_engine, threads),
        )
    train_rates, infer_rates, ig_rates = {}, {}, {}
    for row in facts.rows:
        key = f"network:{row.key}:T{facts.n_phases}:B{facts.batch_size}:{execution.device}:threads{threads}"
        rates = entry(key, lambda row=row: list(measure_network(row, facts.n_phases, facts.batch_size,
                                                                execution.device)))
        train_rates[row.key], infer_rates[row.key] = rates
    if facts.reference is not None:
        row = facts.reference
        ig_rates[row.key] = entry(
            f"ig:{row.key}:T{facts.n_phases}:{config.explain.method}:{execution.device}:threads{threads}",
            lambda: measure_ig(row, facts.n_phases, config.explain.method, execution.device,
                               execution.explain_batch_size),
        )
    record = {"format": CALIBRATION_FORMAT, "machine": machine, "entries": entries}
    if measured:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, record)
    rates = Rates(radiomics_rate, train_rates, infer_rates, ig_rates)
    return rates, record


# -------------------------------------------------------------------------------------------------- cohort facts


def _selected_count(run_dir: Path, mode: str) -> int | None:
    """Features the select stage chose (the largest over folds), if it has run."""
    from vent.io import layout

    counts = []
    for path in sorted(layout.stage_dir(run_dir, "select").glob(f"{mode}*.json")):
        try:
            counts.append(len(json.loads(path.read_text())["selected"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(counts) if counts else None


def _voxels_from_runs(config: Any, cases: list[str]) -> tuple[dict[str, int], int, str] | None:
    """(voxels per case, phases, source) from the radiomics files, else the preprocessed cases, when all exist."""
    from vent.io import layout
    from vent.io.artifacts import open_radiomics_case, read_preprocessed_case

    run_dir = config.run_dir
    radiomics = [layout.case_file(run_dir, "radiomics", c) for c in cases]
    if cases and all(p.is_file() for p in radiomics):
        opened = [open_radiomics_case(p) for p in radiomics]
        return {c: r.n_voxels for c, r in zip(cases, opened)}, opened[0].n_phases, "radiomics files"
    preprocessed = [layout.case_file(run_dir, "preprocess", c) for c in cases]
    if cases and all(p.is_file() for p in preprocessed):
        read = [read_preprocessed_case(p, load_ct=False) for p in preprocessed]
        voxels = {c: int(r.lung_mask_zyx.astype(bool).sum()) for c, r in zip(cases, read)}
        return voxels, _preprocessed_phases(read[0]), "preprocessed analysis masks"
    return None


def _preprocessed_phases(case: Any) -> int:
    order = case.attrs.get("phase_order")
    return len(order) if order is not None else int(case.attrs.get("n_phases", 0))


def _voxels_from_inputs(config: Any) -> tuple[dict[str, int], int, str]:
    """Voxels per case from the input lung masks (average, else first phase), rescaled to the analysis grid."""
    import numpy as np
    import SimpleITK as sitk

    from vent.stages.preprocess import cohort_subjects

    cell_mm3 = float(np.prod(config.preprocess.spacing_mm))
    voxels, n_phases = {}, 0
    for case, files in cohort_subjects(config).items():
        mask_path = files.average_mask or (files.phase_masks[0] if files.phase_masks else None)
        n_phases = len(files.phase_images)
        if mask_path is None:
            continue
        mask = sitk.ReadImage(str(mask_path))
        count = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
        voxels[case] = int(count * float(np.prod(mask.GetSpacing())) / cell_mm3)
    return voxels, n_phases, "input lung masks rescaled to the analysis grid"


def _row_facts(config: Any, run: Any, n_selected: int) -> RowFacts:
    from vent.models.registry import get_spec

    spec = get_spec(run.model)
    params = dict(config.train.models.get(run.model) or {})
    return RowFacts(run.row, run.model, params, n_selected if spec.input_kind == "radiomics" else 1)


def cohort_facts(config: Any, stages: tuple[str, ...]) -> CohortFacts | None:
    """The run's :class:`CohortFacts`, or ``None`` when the cohort's data is not there yet (synthetic data not
    generated). ``stages``: the stages the run uses (explain only when it is one of them)."""
    from vent.models.registry import get_spec
    from vent.stages.preprocess import cohort_subjects
    from vent.stages.train import training_runs

    if config.data.synthetic is not None and not Path(config.data.root).is_dir():
        return None
    cases = sorted(cohort_subjects(config))
    found = _voxels_from_runs(config, cases) or _voxels_from_inputs(config)
    voxels, n_phases, source = found
    n_selected = _selected_count(config.run_dir, config.select.mode) or ASSUMED_SELECTED_FEATURES
    rows, others = [], []
    for run in training_runs(config):
        (rows if get_spec(run.model).family == "sequence" else others).append(run)
    row_facts = [_row_facts(config, run, n_selected) for run in rows]
    reference = next((r for r in row_facts if r.row == config.train.reference_model), None)
    return CohortFacts(
        voxels=voxels,
        n_phases=n_phases,
        n_folds=config.cv.n_folds,
        val_fraction=config.cv.val_fraction,
        rows=row_facts,
        other_rows=[run.row for run in others],
        max_epochs=config.train.max_epochs,
        max_voxels_per_case=config.train.max_voxels_per_case,
        batch_size=config.train.batch_size,
        explain_voxels_per_class=config.explain.voxels_per_class_per_case,
        explain_steps=(config.explain.n_steps, config.explain.max_steps),
        reference=reference if "explain" in stages else None,
        parallel_tasks=parallel_tasks(config.execution),
        source=source + ("" if _selected_count(config.run_dir, config.select.mode) else
                         f"; {ASSUMED_SELECTED_FEATURES} selected features assumed"),
    )



def status_table(config: Any, states: dict[str, str], echo: Callable[[str], None] = log.info,
                 cache_file: Path | None = None) -> tuple[str, list[tuple[str, str, str, str]]] | None:
    """The estimate for ``vent status``: (title, rows of stage, state, estimated time, basis), or ``None`` when the
    cohort's data is not there yet.

    Args:
        config: The run config.
        states: Stage -> state (``current``, ``never run``, ...) of the stages the run uses.
        echo: Told when a rate is measured (the first time on a machine).
        cache_file: The calibration cache (default ``vent.io.layout.calibration_file()``, the user's cache).
    """
    from vent.io import layout

    facts = cohort_facts(config, tuple(states))
    if facts is None or not facts.voxels:
        return None
    rates, record = calibrate(cache_file or layout.calibration_file(), facts, config, echo)
    rows = []
    for estimate in estimate_stages(facts, rates, tuple(states)):
        low, high = format_seconds(estimate.low), format_seconds(estimate.high)
        rows.append((estimate.stage, states[estimate.stage], low if low == high else f"{low} to {high}",
                     estimate.basis))
    machine = record["machine"]
    title = (
        f"estimated time on {machine['device']} ({machine['cpu']}, {machine['cores']} cores; "
        f"{facts.parallel_tasks} task(s) at once x {per_task_threads(config.execution)} thread(s)): "
        f"{len(facts.voxels)} patients, "
        f"{sum(facts.voxels.values()):,} lung voxels ({facts.source})"
    )
    return title, rows
