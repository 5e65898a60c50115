"""Independent jobs of one stage on the CPU cores: the tiny models' small matrices scale poorly
over intra-op threads, so on CPU N single-threaded jobs side by side beat one job on N threads.

Workers are forked: they inherit the stage's imports (torch + transformers + peft cost ~4.5 s a
process) and data. A forked child may only run torch single-threaded (the parent's OpenMP pool
does not survive the fork), so where the cores leave a worker more than one thread the workers
are spawned instead. On an accelerator, or with one worker, the jobs run here one after another.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def plan(workers: int, n_jobs: int, per_job: bool = False) -> tuple[int, int]:
    """(worker processes, torch threads each): `workers` 0 = one per core, or with `per_job` one
    per job up to twice the cores (jobs of equal size: 3 on 2 cores end at 1.5x one job's time,
    not 2x); never more than the jobs; one worker on an accelerator (its memory holds one job's
    models)."""
    import torch

    cores = os.cpu_count() or 1
    if torch.cuda.is_available():
        return 1, torch.get_num_threads()
    n = max(1, min(int(workers) or (2 * cores if per_job else cores), n_jobs))
    return n, (torch.get_num_threads() if n == 1 else max(1, cores // n))


_SHARED: dict = {}  # what every job of the running `run_jobs` reads (inherited by forked workers)


def _init(threads: int, shared=None) -> None:
    import torch

    torch.set_num_threads(threads)
    if shared is not None:  # spawned: sent once per worker
        _SHARED["value"] = shared


def _call(fn: Callable, job):
    return fn(_SHARED["value"], job) if "value" in _SHARED else fn(job)


def run_jobs(fn: Callable[..., R], jobs: Sequence[T], workers: int = 0, per_job: bool = False,
             shared=None) -> list[R]:
    """`[fn(job) for job in jobs]` (`fn(shared, job)` when `shared` is given: objects every job
    reads, e.g. models, not pickled per job), the jobs spread over `plan(workers, len(jobs),
    per_job)` processes (`fn` and the jobs must pickle). Results come back in job order; a job's
    error is raised here."""
    n, threads = plan(workers, len(jobs), per_job)
    if n == 1:
        return [fn(job) if shared is None else fn(shared, job) for job in jobs]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' own pool and fork
    fork = threads == 1
    if shared is not None and fork:
        _SHARED["value"] = shared
    try:
        with ProcessPoolExecutor(n, mp_context=get_context("fork" if fork else "spawn"), initializer=_init,
                                 initargs=(threads, None if fork else shared)) as pool:
            return list(pool.map(partial(_call, fn), jobs))
    finally:
        _SHARED.clear()
