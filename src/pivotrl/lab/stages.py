"""Stage scheduling for `pivotrl lab run`: each stage's JSON result is kept on disk and read back
when rerun (so an interrupted run resumes where it stopped), and several `lab run` processes on
one folder share the stages through one lock file each (two workers on two cores)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pivotrl.artifacts import atomic_open


def _claim(lock: Path) -> bool:
    """Take `lock` for this process. A lock left by a process that is gone (killed, crashed) is taken
    over; one held by a live process (another `lab run` on this folder, on this machine) is not.
    A pid file rather than `filelock`'s flock: it is removed when the stage ends without racing a
    waiter, and it says which process holds the stage."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
                os.kill(pid, 0)
                return pid == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)
                continue
            except PermissionError:  # alive, another user's
                return False
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def run_stage(path: Path, fn, progress=None, label="", wait: bool = True):
    """Run `fn` once: its JSON result is kept at `path`, and a rerun reads it back. Several `lab run`
    processes on one folder share the stages (one lock file each): a stage another live process is
    running is waited for (`wait`) or left for later (returns None)."""
    lock, claimed = path.with_name(path.name + ".lock"), False
    while not path.exists() and not (claimed := _claim(lock)):
        if not wait:
            return None
        time.sleep(5)
    if path.exists():  # done before (or by another worker just now)
        if claimed:
            lock.unlink(missing_ok=True)
        if progress:
            progress(f"{label} (done before, skipped)")
        return json.loads(path.read_text())
    try:
        if progress:
            progress(label)
        result = fn()
        with atomic_open(path) as fh:
            fh.write(json.dumps(result, indent=2, default=str))
    finally:
        lock.unlink(missing_ok=True)
    return result
