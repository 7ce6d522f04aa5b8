"""bebkit.locks with real processes: a run folder has one holder; an artifact is built once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("filelock")

from bebkit.errors import InputError, RunError
from bebkit.locks import LockedError, RunLock, artifact_lock, lock_path

HOLD_RUN = textwrap.dedent(
    """
    import sys, time
    from bebkit.locks import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("LOCKED", flush=True)
    time.sleep(120)
    """
)

# Build-once worker: take the artifact lock, build (count + publish) unless already valid.
BUILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bebkit.integrity import is_valid, publish_folder
    from bebkit.locks import artifact_lock
    folder, go, who = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    with artifact_lock(folder, what="test artifact", log=lambda m: print(m, flush=True)):
        if is_valid(folder, deep=True):
            print(who, "REUSED", flush=True)
        else:
            print(who, "BUILDING", flush=True)
            while not go.exists():  # hold the lock until the test says go
                time.sleep(0.02)
            with open(folder.parent / "builds.log", "a") as fh:
                fh.write(who + "\\n")
            with publish_folder(folder, what="test artifact") as tmp:
                (tmp / "data").write_text("built by " + who)
            print(who, "BUILT", flush=True)
    """
)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _expect_line(proc: subprocess.Popen[str], needle: str) -> str:
    """Read the child's stdout until a line containing ``needle`` (fails if it exits first)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if needle in line:
            return line
    raise AssertionError(
        f"child exited without printing {needle!r}: {proc.stderr.read() if proc.stderr else ''}"
    )


def test_second_run_holder_fails_at_once_naming_the_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = _spawn(HOLD_RUN, str(run))
    try:
        _expect_line(child, "LOCKED")
        with pytest.raises(LockedError) as info:
            RunLock(run).acquire()
        msg = str(info.value)
        assert isinstance(info.value, InputError) and info.value.exit_code == 2
        assert f"run folder {run} is in use by pid {child.pid} on " in msg
        assert "\n" not in msg
        # SIGKILL: the kernel drops the lock with the process; no stale lock remains.
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        with RunLock(run) as lock:
            assert lock.held
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_run_lock_is_exclusive_within_a_process_too(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "run").acquire()
    with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    first.release()  # idempotent
    assert not first.held
    with RunLock(tmp_path / "run"):
        pass


def test_two_processes_build_an_artifact_once(tmp_path: Path) -> None:
    folder = tmp_path / "art"
    go = tmp_path / "go"
    a = _spawn(BUILD, str(folder), str(go), "A")
    b: subprocess.Popen[str] | None = None
    try:
        _expect_line(a, "A BUILDING")  # A holds the lock
        b = _spawn(BUILD, str(folder), str(go), "B")
        waiting = _expect_line(b, "waiting for test artifact")
        assert f"pid {a.pid}" in waiting  # B names who it waits for
        go.touch()
        assert "B REUSED" in _expect_line(b, "B ")
        assert a.wait(timeout=60) == 0 and b.wait(timeout=60) == 0
    finally:
        for p in (a, b):
            if p is not None:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=30)
                for stream in (p.stdout, p.stderr):
                    if stream is not None:
                        stream.close()
    assert (tmp_path / "builds.log").read_text() == "A\n"  # built once
    assert (folder / "data").read_text() == "built by A"


def test_artifact_lock_timeout_is_a_run_error(tmp_path: Path) -> None:
    folder = tmp_path / "art"
    with artifact_lock(folder, what="x"):
        assert lock_path(folder).exists()
        with (
            pytest.raises(RunError, match=r"gave up after 0\.1 s waiting for x"),
            artifact_lock(folder, what="x", timeout=0.1),
        ):
            pass
    with artifact_lock(folder, what="x", timeout=0.1):  # released
        pass
