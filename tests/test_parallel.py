"""Jobs side by side: results in job order, one torch thread per forked worker, errors raised here."""
import os

import pytest
import torch

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
        assert threads == max(1, min(torch.get_num_threads(), cores // n))
    assert plan(0, 3, per_job=True)[0] == min(3, 2 * cores)


@pytest.mark.skipif(torch.cuda.is_available(), reason="one worker on an accelerator")
def test_threads_per_job_come_from_the_default_plan_not_from_workers(monkeypatch):
    """8 cores, 8 torch threads: 3 jobs -> 3 processes of 8 // 3 = 2 threads by default, and 2
    threads per job with any other worker count (results do not depend on `workers`)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    torch.set_num_threads(8)
    try:
        assert [plan(w, 3) for w in (0, 1, 2, 5)] == [(3, 2), (1, 2), (2, 2), (3, 2)]
        assert [plan(w, 20) for w in (0, 1, 4)] == [(8, 1), (1, 1), (4, 1)]
        assert plan(0, 3, per_job=True) == (3, 2) and plan(0, 1) == (1, 8) and plan(3, 1) == (1, 8)
        torch.set_num_threads(1)   # a caller pinned to one thread keeps one in every job
        assert plan(0, 3) == (3, 1) and plan(0, 1) == (1, 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_jobs_run_with_the_same_threads_here_and_in_workers():
    seen = [{o[1] for o in run_jobs(_job, [1, 2, 3], workers=w)} for w in (1, 2, 0)]
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 1


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


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_beside_runs_jobs_in_a_worker_while_this_process_works():
    """On two cores: one forked worker beside this process, both at the plan's one thread."""
    from mmunlearn.parallel import Beside

    before = torch.get_num_threads()
    with Beside(0, 3) as beside:
        futures = [beside.submit(_job, x) for x in range(4)]
        here = _job(10)                       # this process's own work meanwhile
        out = [f.result() for f in futures]
    assert [o[0] for o in out] == [0, 1, 4, 9] and here[0] == 100
    assert {o[2] for o in out}.isdisjoint({os.getpid()})
    if (os.cpu_count() or 1) == 2:
        assert {o[1] for o in out} == {here[1]} == {1}
    assert torch.get_num_threads() == before


def test_beside_with_one_worker_runs_each_job_here_at_once():
    from mmunlearn.parallel import Beside

    with Beside(1, 3) as beside:
        done = beside.submit(_job, 4)
        assert done.done() and done.result()[0] == 16 and done.result()[2] == os.getpid()
        with pytest.raises(ValueError, match="job 2 failed"):
            beside.submit(_fails, 2)
