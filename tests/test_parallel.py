"""Jobs side by side: results in job order, one torch thread per forked worker, errors raised here."""
import os

import pytest

from mmunlearn.parallel import plan, run_jobs


def _job(x: int) -> tuple[int, int, int]:
    import torch

    return x * x, torch.get_num_threads(), os.getpid()


def _fails(x: int) -> int:
    if x == 2:
        raise ValueError(f"job {x} failed")
    return x


def test_plan_caps_workers_by_jobs_and_splits_cores():
    cores = os.cpu_count() or 1
    assert plan(1, 5)[0] == 1
    assert plan(0, 1)[0] == 1
    n, threads = plan(0, 10)
    assert n == min(cores, 10)
    if n > 1:
        assert threads == max(1, cores // n)
    assert plan(0, 3, per_job=True)[0] == min(3, 2 * cores)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_forked_workers_return_in_order_single_threaded():
    out = run_jobs(_job, list(range(6)), workers=2)
    assert [o[0] for o in out] == [x * x for x in range(6)]
    assert {o[2] for o in out} - {os.getpid()}, "jobs ran in worker processes"
    assert os.getpid() not in {o[2] for o in out}
    if (os.cpu_count() or 1) == 2:
        assert {o[1] for o in out} == {1}


def test_one_worker_runs_here():
    out = run_jobs(_job, [3], workers=0)
    assert out[0][0] == 9 and out[0][2] == os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_job_error_is_raised(workers):
    with pytest.raises(ValueError, match="job 2 failed"):
        run_jobs(_fails, [1, 2, 3], workers=workers)


def _with_shared(shared: dict, x: int) -> int:
    return shared["k"] * x


@pytest.mark.parametrize("workers", [1, 2])
def test_shared_objects_reach_every_job(workers):
    assert run_jobs(_with_shared, [1, 2, 3], workers=workers, shared={"k": 10}) == [10, 20, 30]
