"""One run per output: a lock file in OUT that names its holder and carries a heartbeat.

``OUT/.fluoden/lock`` holds JSON: a token (new for every run), the holder's host name,
PID, process start time and machine id (Linux boot id and PID namespace), and when it
started. It is made complete in a temporary file and then hard-linked into place, which
fails when the name exists (atomic on local filesystems and NFS), so of two runs that
start together exactly one gets it; the other is refused with the holder named.

While held, a thread touches the file's mtime every :data:`HEARTBEAT_S` seconds. A lock
is *stale*, and the next run takes it over, when

- its holder ran on this machine (same machine id) and that process no longer exists
  (a killed run: the rerun is not blocked), or
- its heartbeat is older than :data:`STALE_AFTER_S` (a run killed on another host, or a
  host that went down: a rerun elsewhere waits that long at most).

Within one Python process a newer plan on the same OUT supersedes an older plan that is
not running (the API's ``p = plan(cfg)`` twice); one that is running refuses it.

Block tasks (on any host) compare the run's token, carried by
:class:`~fluoden_batch.io.store.OutputSpec`, with the token in the file before they write
their chunks and before their completion marker (:func:`check_owner`: one small read), so
a run that lost OUT to another one stops writing into it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fluoden_batch.errors import OutputError

LOCK_DIR = ".fluoden"
LOCK_FILE = "lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0

_RUNNING: set[str] = set()  # tokens of the locks whose run is executing in this process


def lock_path(out: Path) -> Path:
    """Where the lock of output ``out`` lives."""
    return Path(out) / LOCK_DIR / LOCK_FILE


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's fields, ``{}`` when it exists but cannot be parsed, None when absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _machine() -> str:
    """This machine and PID namespace (PIDs mean the same process only within one)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:  # not Linux: the host name is the best there is
        return socket.gethostname()


def _start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot), None if it does not exist
    or has exited (a zombie); ``""`` where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, start: str) -> bool:
    """Whether process ``pid``, started at ``start``, still runs on this machine."""
    now = _start_time(pid)
    if now is None:
        return False
    if now == "":  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return not start or now == start


def describe_holder(info: dict[str, Any], age: float) -> str:
    """``pid 12 on host h, started <time>, last heartbeat 3 s ago``."""
    who = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    return f"{who}, started {info.get('started', '?')}, last heartbeat {age:.0f} s ago"


class OutputLock:
    """The lock a run holds on its output; release it with :meth:`release`.

    Attributes
    ----------
    out : Path
        The output directory.
    token : str
        This run's token (the workers compare it with the file's).
    """

    def __init__(self, out: Path, token: str) -> None:
        self.out = out
        self.token = token
        stop = threading.Event()
        beat = threading.Thread(
            target=_heartbeat, args=(lock_path(out), token, stop), daemon=True, name="fluoden-lock"
        )
        beat.start()
        # released when the plan holding it is dropped, or at exit, at the latest
        self._release = weakref.finalize(self, _release, lock_path(out), token, stop)

    @classmethod
    def acquire(cls, out: Path) -> OutputLock:
        """Take the lock of ``out`` (a directory, created if missing, with its parents).

        Raises
        ------
        OutputError
            Another live run holds it (named, with what to do), or ``out`` cannot be
            written (no space, read-only, permissions).
        """
        path = lock_path(out)
        token = uuid.uuid4().hex
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for _ in range(3):
                if _create(path, token):
                    return cls(out, token)
                _take_over_if_stale(out, path, token)
                if (_read(path) or {}).get("token") == token:
                    return cls(out, token)
        except OSError as exc:
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
        raise OutputError(f"{out}: another run keeps taking its lock; try again")

    def check(self) -> None:
        """Raise :class:`OutputError` unless this run still holds the lock."""
        check_owner(self.out, self.token)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Mark the run as executing: a newer plan in this process is refused meanwhile."""
        self.check()
        _RUNNING.add(self.token)
        try:
            yield
        finally:
            _RUNNING.discard(self.token)

    def release(self) -> None:
        """Give the lock up (removes the file if it still holds this run's token)."""
        self._release()


def _heartbeat(path: Path, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            if (_read(path) or {}).get("token") != token:
                return  # taken over or released: the run finds out at its next check
            os.utime(path)
        except OSError:  # a transient filesystem error: try again at the next beat
            continue


def _release(path: Path, token: str, stop: threading.Event) -> None:
    stop.set()
    with contextlib.suppress(OSError):
        if (_read(path) or {}).get("token") == token:
            path.unlink()


def _fields(token: str) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "token": token,
        "host": socket.gethostname(),
        "pid": pid,
        "process_start": _start_time(pid) or "",
        "machine": _machine(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _create(path: Path, token: str) -> bool:
    """Create the lock file complete with ``token``; False if one exists."""
    tmp = path.with_name(f".{LOCK_FILE}.{token}.tmp")
    try:
        tmp.write_text(json.dumps(_fields(token)))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some FUSE mounts): exclusive create instead
            return _create_exclusive(path, tmp.read_text())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (a crash before the write leaves
    it empty: unreadable locks are stale after :data:`STALE_AFTER_S`)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _take_over_if_stale(out: Path, path: Path, token: str) -> None:
    """Replace the lock at ``path`` by ours if its holder is gone (or is an idle plan of
    this process); raise :class:`OutputError` naming a live holder."""
    info = _read(path)
    if info is None:
        return  # released meanwhile: the caller tries to create it again
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return
    here = info.get("machine") == _machine()
    ours = here and info.get("pid") == os.getpid()
    if ours and info.get("token") in _RUNNING:
        raise OutputError(f"{out} is being written by a run in this process; wait for it to finish")
    gone = here and not _alive(int(info.get("pid", -1)), str(info.get("process_start", "")))
    if not (ours or gone or age > STALE_AFTER_S):
        raise OutputError(
            f"{out} is in use by another fluoden run ({describe_holder(info, age)}); wait "
            "for it to end or stop it, then run again (also with --overwrite). The lock of "
            f"a killed run is taken over at once on the same machine, and after "
            f"{STALE_AFTER_S:.0f} s without a heartbeat from another one"
        )
    # Move the stale lock aside, and drop it only if it is the one judged stale (another
    # run may have taken it over in between: then put that one back).
    aside = path.with_name(f".{LOCK_FILE}.{token}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if (_read(aside) or {}).get("token") == info.get("token"):
        aside.unlink()
        _create(path, token)
    else:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()


def check_owner(out: Path | str, token: str) -> None:
    """Raise :class:`OutputError` unless the lock of ``out`` holds ``token``.

    Called by block tasks before they write chunks or a completion marker, and by the
    run before it writes its summary: a run whose lock was taken over (or removed)
    writes nothing more into ``out``.
    """
    path = lock_path(Path(out))
    info = _read(path)
    if info is not None and info.get("token") == token:
        return
    holder = (
        "its lock was released"
        if info is None
        else f"another run took it over: pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    )
    raise OutputError(f"{out} is no longer held by this run ({holder}); this run writes no more")
