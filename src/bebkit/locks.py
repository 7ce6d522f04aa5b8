"""Inter-process locks: one per artifact folder (wait) and one per run folder (fail at once).

Both are OS file locks (``flock`` via the ``filelock`` package, never its "soft" fallback),
so the kernel releases them when the holder dies — a SIGKILLed process never leaves a stale
lock behind. Lock files are never deleted (deleting them would let two processes lock two
different inodes); they are empty dot-files.

* :func:`artifact_lock` — around "check if published → build → publish" of one artifact
  folder (a converted model, an adapter). A second process that needs the same artifact
  *waits*, then finds it published and reuses it: the work is done once.
* :class:`RunLock` — a run folder has one writer. A second holder fails immediately with
  :class:`LockedError` (exit 2, one line naming the holder's pid): waiting behind a
  multi-hour run is never what the user meant.

The holder's pid, host and start time are written to ``<lock>.owner`` after acquiring (the
lock file itself may be truncated by contenders); they are informational only.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from bebkit.errors import InputError, RunError

RUN_LOCK_FILE = ".bebkit-run.lock"


class LockedError(InputError):
    """The folder is locked by another live process (exit 2: choose another folder or wait)."""


def lock_path(folder: str | Path) -> Path:
    """The lock file of an artifact folder: ``<parent>/.<name>.lock`` (beside, not inside,
    because the folder itself is replaced by an atomic rename when it is published)."""
    p = Path(folder)
    return p.parent / f".{p.name}.lock"


def _owner_path(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".owner")


def _write_owner(lock_file: Path) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    tmp = lock_file.with_name(f"{lock_file.name}.owner.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(info), encoding="utf-8")
        os.replace(tmp, _owner_path(lock_file))
    except OSError:  # informational only: a failure must not fail the locked work
        tmp.unlink(missing_ok=True)


def read_owner(lock_file: str | Path) -> dict[str, Any] | None:
    """``{"pid", "host", "since"}`` of the last process that took ``lock_file`` (or None)."""
    try:
        data = json.loads(_owner_path(Path(lock_file)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe_owner(lock_file: Path) -> str:
    owner = read_owner(lock_file)
    if owner is None:
        return "another process"
    since = owner.get("since")
    when = (
        time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(float(since)))
        if isinstance(since, int | float)
        else ""
    )
    return f"pid {owner.get('pid')} on {owner.get('host')}{when}"


def _new_lock(path: Path) -> Any:
    from filelock import FileLock

    # fallback_to_soft=False: a soft lock survives a SIGKILL of its holder (stale lock).
    # thread_local=False: the lock may be released from another thread than the acquirer's.
    return FileLock(str(path), fallback_to_soft=False, thread_local=False)


def _try_acquire(lock: Any, path: Path, timeout: float) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    except OSError as exc:
        raise RunError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    return True


@contextmanager
def artifact_lock(
    folder: str | Path,
    *,
    what: str,
    log: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold the lock of artifact ``folder`` for the block, waiting if another process has it.

    ``what`` names the artifact in the "waiting" line sent to ``log`` and in the timeout
    error. ``timeout`` (seconds, None = forever) bounds the wait; past it :class:`RunError`.
    """
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _new_lock(path)
    if not _try_acquire(lock, path, 0):
        if log is not None:
            log(f"waiting for {what}: it is being built by {_describe_owner(path)}")
        if not _try_acquire(lock, path, -1 if timeout is None else timeout):
            raise RunError(
                f"gave up after {timeout:g} s waiting for {what} "
                f"(locked by {_describe_owner(path)}; lock file {path})"
            )
    try:
        _write_owner(path)
        yield
    finally:
        lock.release()


class RunLock:
    """Exclusive lock of a run folder; a second holder fails at once with :class:`LockedError`.

    ``with RunLock(run_dir): ...`` or ``lock = RunLock(run_dir).acquire()`` … ``lock.release()``.
    The lock file is ``<run_dir>/.bebkit-run.lock`` (``run_dir`` is created if missing).
    Also exclusive between two ``RunLock`` objects of the same process.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RUN_LOCK_FILE
        self._lock: Any = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._lock is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`LockedError` naming the holder (never waits)."""
        if self._lock is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = _new_lock(self.path)
        if not _try_acquire(lock, self.path, 0):
            raise LockedError(
                f"run folder {self.run_dir} is in use by {_describe_owner(self.path)}; "
                "wait for that run to finish or choose another folder"
            )
        self._lock = lock
        _write_owner(self.path)
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
