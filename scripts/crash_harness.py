"""Crash-safety harness: kill `vent run` with SIGKILL inside every stage, resume, and check.

    python scripts/crash_harness.py CONFIG --run-dir RUN [--reference REF] [--seed 0]

1. The reference: an uninterrupted `vent run CONFIG` into REF (made when REF holds no finished report). Its
   sealed files are what each stage writes; the stages are taken in the order they ran.
2. One attempt per stage, in that order, all on RUN: a file the stage writes is drawn at random (seeded), and
   `vent run` is started with ``VENT_FAULT_KILL`` so that it SIGKILLs itself while writing that file, at a moment
   drawn at random: ``before_rename`` (the file complete under its temporary name, as a kill mid-write leaves it) or
   ``after_rename`` (renamed, not yet sealed). SIGKILL runs no handler and no cleanup: a pre-emption or OOM kill.
   Killing at writes rather than at wall-clock times makes every attempt land in its stage however fast the
   machine. After every kill the harness checks that nothing partial is taken as complete: every output a stage
   manifest lists verifies against its content seal, and so does every sealed file (``vent.io.seals``).
3. A last `vent run` finishes RUN; its artifacts must equal REF's (``vent.io.compare.compare_run_folders``, bit for
   bit apart from its listed run-specific fields), and one more `vent run` must skip every stage.

Prints one line per attempt and exits non-zero when a check fails. ``tests/test_crash_safety.py`` runs it on the
tiny cohort in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

MOMENTS = ("before_rename", "after_rename")


@dataclass
class Attempt:
    """One killed run: the stage and file it was aimed at, the moment, and the stage it died in."""

    target: str
    file: str
    moment: str
    died_in: str | None  # the last stage that printed "runs" before the kill; None: the run finished first
    problems: list[str] = field(default_factory=list)


def vent_command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "vent.cli", "--quiet", "run", str(config), "--run-dir", str(run_dir)]


def _run(config: Path, run_dir: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(vent_command(config, run_dir), capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, timeout=timeout_s)


def run_to_end(config: Path, run_dir: Path, timeout_s: float = 1800) -> str:
    """`vent run` until it finishes; returns its output."""
    done = _run(config, run_dir, {}, timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"vent run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def writes_by_stage(reference: Path) -> dict[str, list[str]]:
    """``{stage: the files it wrote, relative to the run folder}`` of a finished run (its sealed files), stages in the
    order they ran (their manifests' start times)."""
    from vent.io.seals import sealed_files

    manifests = reference.glob("*/manifest.json")
    started = {m.parent.name: json.loads(m.read_text())["provenance"]["started"] for m in manifests}
    out: dict[str, list[str]] = {}
    for stage in sorted(started, key=started.get):
        out[stage] = [str(path.relative_to(reference)) for path in sealed_files(reference / stage)]
    return out


def kill_while_writing(config: Path, run_dir: Path, rel: str, moment: str, timeout_s: float = 1800) -> str | None:
    """`vent run` that SIGKILLs itself at ``moment`` of writing ``rel``; returns the stage it died in (None when it
    finished without writing that file)."""
    done = _run(config, run_dir, {"VENT_FAULT_KILL": f"{moment}:/{rel}"}, timeout_s)
    if done.returncode == 0:
        return None
    if done.returncode != -signal.SIGKILL:
        raise RuntimeError(f"vent run exited with {done.returncode} (aimed at {rel}):\n{done.stdout}\n{done.stderr}")
    running = [line[1 : line.index("]")] for line in done.stdout.splitlines() if "] runs" in line]
    return running[-1] if running else None


def partial_files_taken_as_complete(run_dir: Path) -> list[str]:
    """Outputs a manifest lists, and sealed files, that do not verify (each would be a torn file taken as done)."""
    from vent.io.seals import sealed_files, verify_artifact

    problems = []
    for manifest in sorted(run_dir.glob("*/manifest.json")):
        for rel in json.loads(manifest.read_text()).get("outputs", {}):
            if (reason := verify_artifact(manifest.parent / rel)) is not None:
                problems.append(f"{manifest.parent.name}/{rel} is listed as done but {reason}")
    for artifact in sealed_files(run_dir):
        if artifact.exists() and (reason := verify_artifact(artifact)) is not None:
            problems.append(f"{artifact.relative_to(run_dir)} is sealed but {reason}")
    return problems


def crash_and_resume(config: Path, run_dir: Path, reference: Path, seed: int = 0) -> dict:
    """Steps 2 and 3 of the module docstring; returns the attempts, the differences from the reference and the
    last run's output."""
    from vent.io.compare import compare_run_folders

    rng = random.Random(seed)
    attempts = []
    for stage, files in writes_by_stage(reference).items():
        rel, moment = rng.choice(files), rng.choice(MOMENTS)
        died_in = kill_while_writing(config, run_dir, rel, moment)
        attempt = Attempt(stage, rel, moment, died_in, partial_files_taken_as_complete(run_dir))
        attempts.append(attempt)
        print(f"{stage:<10} killed {moment:<13} {rel}: died in {died_in or '(finished first)'}; "
              f"{len(attempt.problems)} partial file(s) taken as complete", flush=True)
    run_to_end(config, run_dir)
    again = run_to_end(config, run_dir)
    return {"attempts": attempts, "differences": compare_run_folders(reference, run_dir), "rerun_output": again}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True, help="the run folder to kill and resume")
    parser.add_argument("--reference", type=Path, help="an uninterrupted run of CONFIG (made when missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reference = args.reference or args.run_dir.with_name(args.run_dir.name + "_reference")
    if not (reference / "report" / "manifest.json").is_file():
        print(f"reference run into {reference} ...", flush=True)
        run_to_end(args.config, reference)
    result = crash_and_resume(args.config, args.run_dir, reference, args.seed)
    problems = [p for a in result["attempts"] for p in a.problems]
    for line in problems + result["differences"]:
        print("FAIL", line)
    skipped = "done: 0 stage(s) run" in result["rerun_output"]
    print(f"{len(result['attempts'])} kills; partial files taken as complete: {len(problems)}; differences from the "
          f"uninterrupted run: {len(result['differences'])}; a further run skips every stage: {skipped}")
    return 0 if not problems and not result["differences"] and skipped else 1


if __name__ == "__main__":
    sys.exit(main())
