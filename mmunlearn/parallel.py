"""Independent jobs of one stage on the CPU cores: the tiny models' small matrices scale poorly
over intra-op threads, so on CPU N single-threaded jobs side by side beat one job on N threads.

Workers are forked: they inherit the stage's imports (torch + transformers + peft cost ~4.5 s a
process) and data. A forked child may only run torch single-threaded (the parent's OpenMP pool
does not survive the fork), so where the cores leave a worker more than one thread the workers
are spawned instead. On an accelerator, or with one worker, the jobs run here one after another.

Under a data-parallel launch (`mmunlearn.distributed`: torchrun / accelerate launch) the pool
steps aside: the launcher's processes already hold the cores, and every rank must run the same
jobs in the same order (their training steps synchronise), so the jobs run here, in order.

The worker count is a runtime knob (params.yaml `runtime:`, no stage's param): it cannot change
results because each job runs with the torch thread count of the default plan whatever the
count, and float reductions depend on the thread count, not on which process runs a job.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def plan(workers: int, n_jobs: int, per_job: bool = False) -> tuple[int, int]:
    """(worker processes, torch threads per job). Processes: `workers`, 0 = one per core, or with
    `per_job` one per job up to twice the cores (jobs of equal size: 3 on 2 cores end at 1.5x one
    job's time, not 2x); never more than the jobs; one on an accelerator (its memory holds one
    job's models); one under a data-parallel launch (the ranks run every job in step). Threads come
    from the default plan alone, never from `workers`: the cores split between its processes (the
    caller's own count where it has one process), at most the caller's count (a block pinned to 1
    thread stays at 1)."""
    import torch

    from mmunlearn.distributed import world_size

    here = torch.get_num_threads()
    if torch.cuda.is_available() or world_size() > 1:
        return 1, here
    cores = os.cpu_count() or 1
    default = max(1, min(2 * cores if per_job else cores, n_jobs))
    threads = here if default == 1 else max(1, min(here, cores // default))
    return max(1, min(int(workers) or default, n_jobs)), threads


_SHARED: dict = {}  # what every job of the running `run_jobs` reads (inherited by forked workers)


def _init(threads: int, shared=None) -> None:
    import torch

    torch.set_num_threads(threads)
    if shared is not None:  # spawned: sent once per worker
        _SHARED["value"] = shared


def _call(fn: Callable, job):
    return fn(_SHARED["value"], job) if "value" in _SHARED else fn(job)


def _here(fn: Callable, jobs: Sequence, threads: int, shared) -> list:
    """The jobs one after another in this process, with `threads` torch threads (then restored)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [fn(job) if shared is None else fn(shared, job) for job in jobs]
    finally:
        torch.set_num_threads(before)


def run_jobs(fn: Callable[..., R], jobs: Sequence[T], workers: int = 0, per_job: bool = False,
             shared=None) -> list[R]:
    """`[fn(job) for job in jobs]` (`fn(shared, job)` when `shared` is given: objects every job
    reads, e.g. models, not pickled per job), the jobs spread over `plan(workers, len(jobs),
    per_job)` processes (`fn` and the jobs must pickle). Results come back in job order; a job's
    error is raised here."""
    n, threads = plan(workers, len(jobs), per_job)
    if n == 1:
        return _here(fn, jobs, threads, shared)
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


class Beside:
    """Worker processes for jobs that run beside this process's own work: `submit(fn, job)` gives
    a future. The plan is `plan(workers, n_jobs)`'s, counting this process as one of them: on two
    cores, one worker beside it, every process at one torch thread (set here for the duration).
    Where the plan has one process (one core, an accelerator, a data-parallel launch) `submit`
    runs the job here, at once."""

    def __init__(self, workers: int, n_jobs: int):
        self.n, self.threads = plan(workers, n_jobs)
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Beside":
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        if self.n > 1:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            ctx = get_context("fork" if self.threads == 1 else "spawn")
            self.pool = ProcessPoolExecutor(self.n - 1, mp_context=ctx, initializer=_init, initargs=(self.threads, None))
        return self

    def submit(self, fn: Callable[[T], R], job: T) -> Future:
        if self.pool is not None:
            return self.pool.submit(fn, job)
        done: Future = Future()
        done.set_result(fn(job))
        return done

    def __exit__(self, *exc) -> None:
        import torch

        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        torch.set_num_threads(self.before)
