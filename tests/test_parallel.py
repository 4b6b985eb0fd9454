"""The CRF's worker pool (dlib.crf.parallel) against the plain loop it replaces."""

import os
import time

import pytest
import torch  # loaded before the workers fork, as when the torch backend runs

from dlib import crf
from dlib.core.config import available_cpus
from dlib.crf.parallel import on_gpu, ordered_map, resolve_workers


def _apply(state, item):
    """The task: the state's function of the item, and where it ran."""
    time.sleep(state["delay"](item))
    return state["f"](item), os.getpid(), torch.get_num_threads()


def _fail_on_three(state, item):
    if item == 3:
        raise ValueError("task 3 fails on purpose")
    return item


def test_the_pool_returns_the_loop_s_results_in_order():
    # Lambdas in the state reach the workers (fork, no pickling); early items sleep longest, so they finish last.
    state = {"f": lambda x: x * x + 1, "delay": lambda x: 0.05 * (6 - x)}
    items = list(range(6))
    pooled = ordered_map(_apply, items, state, workers=2)
    assert [value for value, _, _ in pooled] == [x * x + 1 for x in items]
    pids = {pid for _, pid, _ in pooled}
    assert os.getpid() not in pids and len(pids) == 2  # two worker processes did the work
    assert {threads for _, _, threads in pooled} == {1}  # one torch thread per worker: the workers share the cores
    serial = ordered_map(_apply, items, {**state, "delay": lambda x: 0}, workers=1)
    assert [value for value, _, _ in serial] == [value for value, _, _ in pooled]
    assert {pid for _, pid, _ in serial} == {os.getpid()}  # one worker: this process


def test_a_failing_task_raises_here():
    with pytest.raises(ValueError, match="task 3 fails on purpose"):
        ordered_map(_fail_on_three, list(range(8)), {}, workers=2)
    assert ordered_map(_fail_on_three, [], {}, workers=2) == []


def test_workers_and_device():
    assert resolve_workers(0) == available_cpus() and resolve_workers(3) == 3
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="workers must be an int"):
            resolve_workers(bad)
    assert not on_gpu(crf.DenseCRF(backend="torch", device="cpu"))
