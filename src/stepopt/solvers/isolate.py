"""Run a solve in a forked child that is killed at the deadline (Linux / POSIX ``fork``).

A backend's own time limit is advice: HiGHS checks it between nodes and overran a 2 s limit
by up to 3.5 s on a busy machine, and CBC's limit does not cover PuLP writing and reading its
files. The child reports each result it has (an incumbent after every solved phase, then the
final one) through a pipe; at the deadline the parent kills the child's whole process group
(the child and the CBC binary PuLP spawned) and keeps the last report. The child dies with
its parent too (``PR_SET_PDEATHSIG``), so a killed caller leaves no solver behind (CBC, a
grandchild, then stops at its own time limit).

CP-SAT uses it too on large problems, where building the model in Python outlasts a limit.
A fork from a process with other threads (a Dask worker) is safe for what the child does, except
a lock another thread held at the fork: the child then blocks and is killed at the deadline.

``os.fork`` rather than :mod:`multiprocessing`: it also works inside daemonic pool workers,
needs no pickling of the work, and starts no resource tracker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1

Report = Callable[[Any], None]


def supported() -> bool:
    return hasattr(os, "fork") and hasattr(os, "killpg")


def run_until(work: Callable[[Report], Any], deadline: float) -> tuple[Any, bool]:
    """``work(report)`` in a child process; returns ``(last value, finished)``.

    ``finished`` is True when ``work`` returned (the value is its result) and False when the
    child was killed at ``deadline`` (a ``time.perf_counter`` instant) or died: the value is
    then the last one it passed to ``report``, or None. An exception ``work`` raised is
    raised again here."""
    parent = os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the caller's code
        os.close(r)
        _child(work, w, parent)
    os.close(w)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also here: no race with a kill before the child's own call
    try:
        return _collect(r, deadline)
    finally:
        os.close(r)
        _reap(pid)


def _child(work: Callable[[Report], Any], w: int, parent: int) -> None:
    code = 0
    try:
        os.setpgid(0, 0)
        _die_with_parent(parent)

        def send(kind: str, value: Any) -> None:
            data = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
            _write_all(w, _HEADER.pack(len(data)) + data)

        result = work(lambda value: send("partial", value))
        send("final", result)
    except BaseException as exc:
        code = 1
        with contextlib.suppress(BaseException):
            send("error", exc)
    finally:
        os._exit(code)  # no atexit handlers, no flushing of buffers copied from the parent


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _collect(r: int, deadline: float) -> tuple[Any, bool]:
    buf = b""
    last: Any = None
    while True:
        left = deadline - time.perf_counter()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            return last, False
        chunk = os.read(r, 1 << 20)
        if not chunk:  # the child is gone without a final report
            return last, False
        buf += chunk
        while len(buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(buf)
            if len(buf) < _HEADER.size + n:
                break
            kind, value = pickle.loads(buf[_HEADER.size : _HEADER.size + n])
            buf = buf[_HEADER.size + n :]
            if kind == "error":
                raise value
            if kind == "final":
                return value, True
            last = value


def _reap(pid: int) -> None:
    """Kill the child's process group (the child and anything it spawned) and wait for it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # in case neither setpgid call took effect
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
