"""One writer per run folder (vent.io.lock): a second command refuses or waits; a dead holder frees the folder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from vent.errors import ArtifactError, ConfigError
from vent.io.lock import LOCK_NAME, run_lock

HOLD = "import sys, time; from vent.io.lock import run_lock\nwith run_lock(sys.argv[1], command='holder'):\n" \
       "    print('held', flush=True); time.sleep(60)\n"


def _hold(run_dir):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_refuses_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(ArtifactError, match=rf"in use by vent \(pid {holder.pid} .*`holder`.*--wait"):
            with run_lock(tmp_path):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with run_lock(tmp_path):  # the kernel released the dead process's lock
        assert (tmp_path / LOCK_NAME).is_file()


def test_wait_queues_behind_the_holder(tmp_path):
    holder = _hold(tmp_path)
    started = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {holder.pid}"])
    with run_lock(tmp_path, wait=True, poll_s=0.05):
        waited = time.monotonic() - started
    holder.wait()
    assert waited >= 0.9


def test_run_dir_that_is_a_file_or_not_writable(tmp_path, monkeypatch):
    a_file = tmp_path / "runs"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        with run_lock(a_file):
            pass
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits: make the denial the kernel would give
        def denied(path, *args):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr("vent.io.lock.os.open", denied)
    try:
        with pytest.raises(ConfigError, match=r"locked/run is not writable .*choose another run_dir"):
            with run_lock(locked / "run"):
                pass
    finally:
        locked.chmod(0o700)
