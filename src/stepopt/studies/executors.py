"""Where a study's tasks run: this process, a local process pool, or a Dask cluster (one at an
address, or a local one this run starts and stops). Each is an iterable of row lists in
completion order.

Worker processes die with the run: a pool worker watches its parent and exits when it is gone
(a ``SIGKILL`` of ``stepopt study run`` leaves no worker behind, and so no resource tracker,
which exits when the last process holding its pipe does); Dask's own worker processes exit
with their parent as well.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from stepopt.errors import InputError, MissingExtraError, StepoptError
from stepopt.studies.worker import run_task

DASK_CONNECT_TIMEOUT_S = 5.0
PARENT_POLL_S = 0.5


def run_inline(tasks: list[Any], fn: Any = run_task) -> Iterator[list[dict[str, Any]]]:
    """``fn`` runs one task (a module-level function: the horizon study passes its own)."""
    for t in tasks:
        yield fn(t)


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: exit as soon as the process that started the pool is gone."""
    if sys.platform.startswith("linux"):
        try:  # the kernel signals us the moment the parent dies
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before we could ask
        os._exit(1)

    def watch() -> None:  # portable fallback: reparenting changes our parent's pid
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="stepopt-parent-watch", daemon=True).start()


def run_local(tasks: list[Any], workers: int, fn: Any = run_task) -> Iterator[list[dict[str, Any]]]:
    """A process pool (spawned processes: no fork of a threaded parent)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        pending = iter(tasks)
        inflight = set()
        try:
            # Keep a few tasks per worker in flight: results stream in, memory stays flat.
            for t in pending:
                inflight.add(pool.submit(fn, t))
                if len(inflight) >= 4 * workers:
                    break
            while inflight:
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        rows = fut.result()
                    except BrokenProcessPool:
                        raise StepoptError(
                            "a worker process died; scripts that run studies on workers need "
                            'the `if __name__ == "__main__":` guard (or use --workers 0)'
                        ) from None
                    yield rows
                    nxt = next(pending, None)
                    if nxt is not None:
                        inflight.add(pool.submit(fn, nxt))
        finally:
            for fut in inflight:
                fut.cancel()


def dask_address(executor: str) -> str | None:
    """``dask://HOST:PORT`` -> ``tcp://HOST:PORT``; ``dask://SCHEME://...`` kept as is;
    plain ``dask`` -> None (a local cluster)."""
    if executor == "dask":
        return None
    rest = executor[len("dask://") :]
    if not rest:
        raise InputError("executor", "dask:// needs HOST:PORT (or plain dask)", executor)
    return rest if "://" in rest else f"tcp://{rest}"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError("distributed", "dask", "--executor dask") from None
    return distributed


def run_dask(
    tasks: list[Any], address: str | None, workers: int = 2, fn: Any = run_task
) -> Iterator[list[dict[str, Any]]]:
    """On the Dask scheduler at ``address``, or on a local cluster of ``workers`` processes
    that lives as long as this run."""
    distributed = _distributed()
    cluster = None
    if address is None:
        cluster = distributed.LocalCluster(
            n_workers=max(workers, 1), threads_per_worker=1, dashboard_address=None
        )
        address = cluster.scheduler_address
    try:
        try:
            client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                "executor",
                f"no Dask scheduler answers at {address} within {DASK_CONNECT_TIMEOUT_S:g} s "
                f"({type(exc).__name__}); start one with `dask scheduler` and workers with "
                "`dask worker ADDRESS`, or use --executor dask for a local cluster",
                show_value=False,
            ) from None
        try:
            futures = client.map(fn, tasks, pure=False)
            for fut in distributed.as_completed(futures):
                yield fut.result()
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
