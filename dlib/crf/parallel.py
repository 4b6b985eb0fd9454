"""Spreading the CRF's work over a data set: worker processes on the CPU, batches of images on one GPU.

* :func:`ordered_map` is ``[fn(state, item) for item in items]`` over a ``concurrent.futures`` process pool,
  results in the order of ``items``. The pool forks, so ``state`` (in-memory arrays, an image reader that may be a
  lambda) reaches the workers without pickling; only ``fn`` (a module-level function), the items and the results
  cross between processes. Each worker runs one thread: the workers share the cores.
* :data:`TORCH_BATCH` and :func:`on_gpu`: the torch backend on a GPU runs in this process instead (CUDA does not
  survive fork), TORCH_BATCH images per lattice.

Used by dlib.crf.tuning (refining a data set) and dlib.crf.crossval (the parameter search).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np

from dlib.core.config import available_cpus
from dlib.crf.dense import DenseCRF

TORCH_BATCH = 16  # images per lattice when the torch backend refines a data set on a GPU


def resolve_workers(workers: int) -> int:
    """0 -> every core this process may use; otherwise the number given (>= 1)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 (0 = all cores), got {workers!r}")
    if workers == 0:
        return available_cpus()
    return int(workers)


def on_gpu(crf: DenseCRF) -> bool:
    """Whether ``crf`` runs on a GPU (the torch backend on a device other than the CPU)."""
    return crf.uses_device and crf.device != "cpu"


# Per-process state of the worker pool: set by the pool initializer (inherited on fork).
_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # one thread per worker process (the torch backend): the workers share the cores
        sys.modules["torch"].set_num_threads(1)
    _STATE.clear()
    _STATE.update(state)


def _call(fn: Callable, item: Any) -> Any:
    return fn(_STATE, item)


def _fork_context():
    # fork: the image reader (which may be a lambda) and in-memory arrays reach workers without pickling.
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def ordered_map(fn: Callable[[dict[str, Any], Any], Any], items: Sequence, state: dict[str, Any], workers: int,
                desc: str = "", progress: bool = False) -> list:
    """``[fn(state, item) for item in items]`` over ``workers`` processes, in order, with a progress bar.

    One worker (or at most one item) runs in this process. A task that raises stops the map: the tasks not yet
    started are cancelled and the error is raised here.
    """
    from tqdm import tqdm

    results: list = [None] * len(items)
    with tqdm(total=len(items), desc=desc, disable=not progress, mininterval=1.0) as bar:
        if workers == 1 or len(items) <= 1:
            for k, item in enumerate(items):
                results[k] = fn(state, item)
                bar.update()
            return results
        with ProcessPoolExecutor(min(workers, len(items)), mp_context=_fork_context(), initializer=_init_worker,
                                 initargs=(state,)) as pool:
            futures = {pool.submit(_call, fn, item): k for k, item in enumerate(items)}
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return results
