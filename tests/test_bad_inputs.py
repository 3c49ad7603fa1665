"""The bad-input matrix: every way a user's data, config or run folder can be wrong, through the CLI a user runs.

One row per bad input: how to make it (from a copy of the tiny cohort, or of a run folder whose preprocess stage
finished), the command, and two regexes the message must match: the file or key at fault, and what to do. Every row
exits non-zero with a message (a ``VentError``: no traceback, no "unexpected error"). A row marked ``after`` breaks
something after a successful earlier stage; it also checks that no earlier artifact was changed or removed (SHA-256
of every file of the run folder before and after; the lock file and the seals' stat records are not artifacts).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from typer.testing import CliRunner

from phantoms import rewrite_image
from tinyrun import TINY, merge
from vent.cli import app

runner = CliRunner()

AWAITING = "awaiting content-verified artifacts"


@dataclass
class Case:
    """One row's world: a copy of the cohort and a run folder under ``tmp``."""

    tmp: Path
    root: Path
    run_dir: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    changes: dict = field(default_factory=dict)

    def config(self, changes: dict | None = None, text: str | None = None) -> Path:
        """The tiny config (no synthetic generator: the cohort is the copy) with ``changes``; or ``text`` as is."""
        path = self.tmp / "config.yaml"
        if text is None:
            raw = merge(merge(TINY, {"data": {"synthetic": None, "root": str(self.root)}}), changes)
            raw["run_dir"] = str(self.run_dir)
            text = yaml.safe_dump(raw, sort_keys=False)
        path.write_text(text)
        return path

    def run(self, *extra: str, changes: dict | None = None) -> list[str]:
        return ["run", str(self.config(changes)), "--only", "preprocess", *extra]

    def ct(self, subject: str = "Subject_01") -> Path:
        return self.root / subject / "CT"

    def gt(self, subject: str = "Subject_01") -> Path:
        return self.root / subject / "GT"


@dataclass(frozen=True)
class Row:
    make: Callable[[Case], list[str]]
    """Breaks the inputs and returns the CLI arguments."""
    names: str
    """Regex: the file or key at fault."""
    todo: str
    """Regex: what to do about it."""
    code: int | None = None
    """The exit code (None: any non-zero)."""
    after: bool = False
    """Made after a successful preprocess stage: no earlier artifact may change."""
    own_data: bool = False
    """With ``after``: the row breaks the data, so it works on its own copy of the cohort."""
    withdrawn: tuple[str, ...] = ()
    """With ``after``: artifacts the command may remove, each because the stage that wrote them re-runs."""
    xfail: str | None = None


# ---- making bad inputs


def _float_with(value: float):
    def change(a):
        out = a.astype(np.float32)
        out[0, :2, :2] = value
        return out

    return change


def _shift(path: Path, mm: float) -> None:
    origin = sitk.ReadImage(str(path)).GetOrigin()
    rewrite_image(path, Origin=(origin[0] + mm, origin[1], origin[2]))


def _keep_phases(ct: Path, n: int) -> None:
    for path in ct.glob("Phase*_*.mha"):
        if int(path.stem.split("_")[1]) > n:
            path.unlink()


def _truncate(path: Path) -> None:
    rewrite_image(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _manifest(case: Case, changed: Callable | None = None, suffix: str = ".csv") -> Path:
    """A manifest of the copied cohort (``changed(files)`` may replace one subject's files)."""
    from vent.io.manifest import write_manifest_csv
    from vent.io.vampire import find_subject_files

    subjects = [find_subject_files(case.root, f"Subject_{i:02d}") for i in range(1, 5)]
    if changed is not None:
        subjects = [changed(files) for files in subjects]
    return write_manifest_csv(case.tmp / f"cases{suffix}", subjects)


def _with_manifest(case: Case, manifest: Path) -> list[str]:
    return case.run(changes={"data": {"root": None, "manifest": str(manifest), "synthetic": None}})


def _dicom_two_series(case: Case) -> list[str]:
    from vent.synth.export import write_dicom_series

    image = sitk.ReadImage(str(case.ct() / "PhaseImage_01.mha"))
    folder = write_dicom_series(image, case.tmp / "dicom" / "phase_01", "Subject_01", "phase 1", 1)
    other = write_dicom_series(image, case.tmp / "dicom" / "other", "Subject_01", "phase 1 again", 2)
    for path in other.iterdir():
        path.rename(folder / f"b_{path.name}")

    def changed(files):
        if files.case_id != "Subject_01":
            return files
        return dataclasses.replace(files, phase_images=(folder, *files.phase_images[1:]))

    return _with_manifest(case, _manifest(case, changed))


def _duplicate_manifest_id(case: Case) -> list[str]:
    def entry(subject: str) -> dict:
        ct, gt = case.ct(subject), case.gt(subject)
        return {"id": "Subject_01", "phases": [str(p) for p in sorted(ct.glob("PhaseImage_*.mha"))],
                "refvi": str(gt / "VentImage.mha")}

    manifest = case.tmp / "cases.yaml"
    subjects = [f"Subject_{i:02d}" for i in range(1, 5)]
    manifest.write_text(yaml.safe_dump({"cases": [{**entry(s), "id": s} for s in subjects] + [entry("Subject_02")]}))
    return _with_manifest(case, manifest)


def _missing_columns(case: Case) -> list[str]:
    manifest = case.tmp / "cases.csv"
    manifest.write_text(f"case_id,image\nSubject_01,{case.ct() / 'PhaseImage_01.mha'}\n")
    return _with_manifest(case, manifest)


def _predict_other_phase_count(case: Case) -> list[str]:
    trained = case.request.getfixturevalue("tiny_run")
    subject = case.tmp / "new" / "Subject_09"
    shutil.copytree(case.root / "Subject_01", subject)
    _keep_phases(subject / "CT", 3)
    return ["predict", str(trained.run_dir), str(subject), "-o", str(case.tmp / "maps")]


def _not_writable(case: Case) -> list[str]:
    case.run_dir.mkdir()
    case.run_dir.chmod(0o555)
    case.request.addfinalizer(lambda: case.run_dir.chmod(0o755))
    if os.geteuid() == 0:  # root writes anyway: the folder answers as a read-only one would
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if str(path).startswith(str(case.run_dir)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        case.monkeypatch.setattr(os, "open", read_only)
    return case.run()


def _disk_full(case: Case) -> list[str]:
    import vent.stages.radiomics as radiomics

    def full(handle, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), handle.filename)

    case.monkeypatch.setattr(radiomics, "create_radiomics_case", full)
    return ["run", str(case.config()), "--only", "radiomics"]


def _locked(case: Case) -> list[str]:
    from contextlib import ExitStack

    from vent.io.lock import run_lock

    stack = ExitStack()
    stack.enter_context(run_lock(case.run_dir, command="vent run other.yaml"))
    case.request.addfinalizer(stack.close)
    return ["run", str(case.config()), "--only", "radiomics"]


def _preprocessed_file(case: Case) -> Path:
    return case.run_dir / "preprocess" / "Subject_01.h5"


def _break_artifact(case: Case, change: Callable[[Path], None]) -> list[str]:
    change(_preprocessed_file(case))
    return ["run", str(case.config()), "--only", "radiomics"]


def _drop_dataset(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        del handle["ct"]


def _format_version(path: Path) -> None:
    """The file as another vent version would have written it: another format_version, and sealed (its bytes are
    the ones that vent wrote)."""
    from vent.io.seals import seal_file

    with h5py.File(path, "r+") as handle:
        handle.attrs["format_version"] = 99
    seal_file(path)


def _gpu(case: Case) -> list[str]:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the row is about a machine without")
    return ["run", str(case.config({"execution": {"device": "cuda"}}))]


def _then(effect: Callable[[Case], object], make: Callable[[Case], list[str]] = lambda c: c.run()):
    """A row's maker: ``effect`` breaks the inputs, then ``make`` gives the arguments (default: run preprocess)."""

    def maker(case: Case) -> list[str]:
        effect(case)
        return make(case)

    return maker


P3 = "Subject_01/CT/PhaseImage_03.mha"
M2 = "Subject_01/CT/PhaseMask_02.mha"
EXCLUDE = r"data\.exclude"
EXPORT = r"export the file again|[Cc]opy or export the file again"

ROWS: dict[str, Row] = {
    # ---- the data (VAMPIRE layout): `vent run CONFIG --only preprocess`
    "missing phase file": Row(
        _then(lambda c: (c.ct() / "PhaseImage_03.mha").unlink()), P3, rf"restore|{EXCLUDE}", 1),
    "unreadable mha": Row(
        _then(lambda c: (c.ct() / "PhaseImage_03.mha").write_bytes(b"not an image")), P3, EXPORT, 1),
    "truncated mha": Row(_then(lambda c: _truncate(c.ct() / "PhaseImage_03.mha")), P3, EXPORT, 1),
    "phase of another size": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseImage_03.mha", lambda a: np.concatenate([a, a[-1:]]))),
        rf"{P3}.*size", EXPORT, 1),
    "phase of another spacing": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseImage_03.mha", Spacing=(1.5, 1.5, 5.0))),
        rf"{P3}.*spacing", EXPORT, 1),
    "phase of another direction": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseImage_03.mha", Direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))),
        rf"{P3}.*direction", EXPORT, 1),
    "mask off the image grid": Row(
        _then(lambda c: _shift(c.ct() / "PhaseMask_02.mha", 12.0)), rf"{M2}.*origin", EXPORT, 1),
    "mask missing for one phase": Row(
        _then(lambda c: (c.ct() / "PhaseMask_02.mha").unlink()), M2, r"give a mask for every phase", 1),
    "empty mask": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseMask_02.mha", np.zeros_like)), rf"{M2} is empty", EXCLUDE, 1),
    "non-binary mask": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseMask_02.mha", lambda a: (a * 7).astype(np.uint8))),
        rf"{M2} holds the values 0, 7", r"0/1 mask", 1),
    "NaN voxels": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseImage_03.mha", _float_with(np.nan))), rf"{P3}.*NaN",
        rf"fix or mask them|{EXCLUDE}", 1),
    "infinite voxels": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseImage_03.mha", _float_with(np.inf))), rf"{P3}.*infinite",
        rf"fix or mask them|{EXCLUDE}", 1),
    "HU outside any plausible range": Row(
        _then(lambda c: [rewrite_image(p, lambda a: a + 6000) for p in c.ct().glob("*Image*")]),
        r"Subject_01/CT/\w+\.mha.*HU", r"rescale slope and intercept", 1),
    "RefVI missing": Row(
        _then(lambda c: (c.gt() / "VentImage.mha").unlink()), r"Subject_01/GT/VentImage\.mha",
        rf"add it|{EXCLUDE}", 1),
    "RefVI all zeros": Row(
        _then(lambda c: rewrite_image(c.gt() / "VentImage.mha", np.zeros_like)),
        r"Subject_01/GT/VentImage\.mha.*all zeros", r"export it again", 1),
    "RefVI outside the lung": Row(
        _then(lambda c: [_shift(c.gt() / name, 300.0) for name in ("VentImage.mha", "VentMask.mha")]),
        r"Subject_01/GT/VentImage\.mha.*outside the lung", r"Check its origin and direction", 1),
    "one phase only": Row(
        _then(lambda c: _keep_phases(c.ct(), 1)), r"Subject_01/CT holds 1 phase image", r"Add the missing", 1),
    "one patient under two subject folders": Row(
        _then(lambda c: shutil.copytree(c.root / "Subject_01", c.root / "Subject_05")),
        r"Subject_01 and \S*Subject_05", r"Remove one folder.*data\.exclude", 1),
    "an excluded subject that is not there": Row(
        lambda c: c.run(changes={"data": {"exclude": {"Subject_9": "motion"}}}), r"data\.exclude.*Subject_9",
        r"remove the entry|check the spelling", 2),
    "data root that is a file": Row(
        _then(lambda c: (c.tmp / "study.txt").write_text("x"),
              lambda c: c.run(changes={"data": {"root": str(c.tmp / "study.txt")}})),
        r"data root \S*study\.txt is a file", r"set data\.root", 1),
    "data root that is an empty folder": Row(
        _then(lambda c: (c.tmp / "empty").mkdir(), lambda c: c.run(changes={"data": {"root": str(c.tmp / "empty")}})),
        r"data root \S*empty holds no subject", r"set data\.root", 1),
    # ---- manifests and DICOM
    "manifest with missing columns": Row(
        _missing_columns, r"cases\.csv.*missing column\(s\) phase", r"add the column", 1),
    "manifest listing one case id twice": Row(
        _duplicate_manifest_id, r"cases\.yaml.*'Subject_01' is listed twice", r"give each case its own id", 1),
    "DICOM folder with two series": Row(
        _dicom_two_series, r"dicom/phase_01 holds 2 DICOM series", r"put each series in its own folder", 1),
    "a phase changed after preprocess finished": Row(
        _then(lambda c: rewrite_image(c.ct() / "PhaseImage_03.mha", Spacing=(1.5, 1.5, 5.0))), rf"{P3}.*spacing",
        EXPORT,
        1, after=True, own_data=True,
        # the stage's inputs changed, so it re-runs: the runner withdraws its manifest before the stage's own checks
        # refuse the phase (the case files stay); `vent status` then says "incomplete" instead of "stale"
        withdrawn=("preprocess/manifest.json",)),
    # ---- the config, after preprocess finished: nothing of it may change
    "unknown model": Row(
        lambda c: c.run(changes={"train": {"models": ["lstm", "lstmm"]}}), r"'lstmm'", r"did you mean 'lstm'", 2,
        after=True),
    "kernel larger than the lung": Row(
        lambda c: ["run", str(c.config({"radiomics": {"kernel_mm": 400}})), "--only", "radiomics"],
        r"radiomics\.kernel_mm", r"set radiomics\.kernel_mm", 2, after=True),
    "more folds than patients": Row(
        lambda c: c.run(changes={"cv": {"n_folds": 9}}), r"cv\.n_folds = 9", r"set cv\.n_folds to at most 4", 2,
        after=True),
    "unknown key": Row(
        lambda c: c.run(changes={"train": {"max_epoch": 3}}), r"train\.max_epoch\b",
        r"did you mean 'train\.max_epochs'", 2, after=True),
    "wrong type": Row(
        lambda c: c.run(changes={"train": {"max_epochs": "many"}}), r"'train\.max_epochs'.*'many'",
        r"fix each key above", 2, after=True),
    "negative learning rate": Row(
        lambda c: c.run(changes={"train": {"lr": -0.001}}), r"'train\.lr'.*-0\.001", r"fix each key above", 2,
        after=True),
    "YAML syntax error": Row(
        lambda c: ["run", str(c.config(text=f"run_dir: {c.run_dir}\ndata: {{root: [unclosed\n"))],
        r"config\.yaml is not valid YAML.*line", r"fix the line", 2, after=True),
    "YAML with a key given twice": Row(
        lambda c: ["run", str(c.config(text=f"run_dir: {c.run_dir}\ndata: {{root: {c.root}}}\ncv: {{n_folds: 2}}\n"
                                       "cv: {n_folds: 3}\n"))],
        r"config\.yaml.*'cv' is given twice", r"keep one of them", 2, after=True),
    "GPU requested where none exists": Row(
        _gpu, r"execution\.device", r"set execution\.device", 2, after=True),
    # ---- the run folder
    "run folder that is a file": Row(
        _then(lambda c: c.run_dir.write_text("x")), r"run_dir \S*run is a file", r"set run_dir", 2),
    "run folder not writable": Row(_not_writable, r"run_dir \S*run is not writable", r"choose another run_dir", 2),
    "disk full": Row(_disk_full, r"no space left.*/run/radiomics/", r"free space", 1, after=True),
    "run folder in use by another vent": Row(
        _locked, r"run folder \S*run is in use by vent", r"--wait", 1, after=True),
    # ---- artifacts
    "truncated HDF5 artifact": Row(
        lambda c: _break_artifact(c, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
        r"preprocess", r"--from preprocess", 1, after=True),
    "interrupted HDF5 artifact (a dataset missing)": Row(
        lambda c: _break_artifact(c, _drop_dataset), r"preprocess", r"--from preprocess", 1, after=True),
    "artifact of another format version": Row(
        lambda c: _break_artifact(c, _format_version), r"Subject_01\.h5 has format_version 99",
        r"--from preprocess", 1, after=True),
    # ---- vent predict
    "predict a case with another phase count": Row(
        _predict_other_phase_count, r"Subject_09 has 3 phases.*read 5", r"--match-phases", 1),
}


def _file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every artifact under ``folder`` (not the lock file, nor the seals: a copy refreshes their stat)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".vent.lock" and not p.name.endswith(".seal.json")
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, tiny_data) -> Path:
    """A module-owned copy of the tiny cohort (the session's stays untouched)."""
    root = tmp_path_factory.mktemp("bad_inputs") / "study"
    shutil.copytree(tiny_data, root)
    return root


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, cohort) -> Path:
    """A run folder whose preprocess stage finished (on ``cohort``), made once: the rows marked ``after`` copy it."""
    base = tmp_path_factory.mktemp("preprocessed")
    case = Case(base, cohort, base / "run", pytest.MonkeyPatch(), None)
    result = runner.invoke(app, case.run())
    assert result.exit_code == 0, result.output
    return case.run_dir


def _params():
    for name, row in ROWS.items():
        marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_bad_input_is_refused_naming_the_fault_and_the_fix(name, tmp_path, cohort, request, monkeypatch):
    row = ROWS[name]
    if row.after and not row.own_data:  # the cohort the run read: the row breaks the config or the run folder
        case = Case(tmp_path, cohort, tmp_path / "run", monkeypatch, request)
    else:
        case = Case(tmp_path, tmp_path / "study", tmp_path / "run", monkeypatch, request)
        shutil.copytree(cohort, case.root)
    if row.after:
        shutil.copytree(request.getfixturevalue("preprocessed"), case.run_dir)
    args = row.make(case)
    before = _file_hashes(case.run_dir) if row.after else {}
    result = runner.invoke(app, args)
    output = result.output
    message = " ".join(output.split())  # an error paragraph may be wrapped
    assert result.exit_code != 0, output
    if row.code is not None:
        assert result.exit_code == row.code, output
    assert "Traceback" not in output and "unexpected error" not in output, output
    assert re.search(row.names, message), f"the message does not name the fault ({row.names!r}):\n{output}"
    assert re.search(row.todo, message, re.IGNORECASE), f"the message does not say what to do ({row.todo!r}):\n{output}"
    if row.after:
        after = _file_hashes(case.run_dir)
        changed = sorted(k for k in before if after.get(k) != before[k] and not (k in row.withdrawn and k not in after))
        assert changed == [], f"earlier artifacts changed or removed: {changed}"


def test_the_matrix_covers_at_least_30_bad_inputs():
    assert len(ROWS) >= 30
    assert all(row.names and row.todo for row in ROWS.values())
