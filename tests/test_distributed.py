"""dlib.training.distributed: a no-op for one process; a real two-process gloo group sums across processes."""

import multiprocessing as mp
import socket

import torch

from dlib.training import distributed


def test_one_process_without_torchrun_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_from_env("cpu")
    assert info == distributed.DistInfo(rank=0, world_size=1, local_rank=0, created=False)
    assert info.is_main and not info.distributed
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t, info) is t and t.tolist() == [1.0, 2.0]
    distributed.barrier(info)
    distributed.cleanup(info)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: still nothing to join
    assert distributed.init_from_env("cpu") == distributed.DistInfo()


def _worker(rank: int, port: int, queue) -> None:
    import os

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    info = distributed.init_from_env("cpu")
    total = distributed.all_reduce_sum(torch.tensor([rank + 1.0, 10.0 * rank]), info)
    distributed.barrier(info)
    distributed.cleanup(info)
    queue.put((rank, info.world_size, info.is_main, info.created, total.tolist(),
               torch.distributed.is_initialized()))


def test_two_gloo_processes_sum_their_tensors():
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")  # the children inherit the imports: no second start-up of torch
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # Ranks 0 and 1 hold [1, 0] and [2, 10]: both see the sum [3, 10]; rank 0 is the main process.
    assert results == [(0, 2, True, True, [3.0, 10.0], False), (1, 2, False, True, [3.0, 10.0], False)]
    assert all(p.exitcode == 0 for p in procs)
