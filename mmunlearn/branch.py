"""One method's branch of the DAG (stage unlearn@<method>): unlearn every variant, then evaluate
its models. The variants are independent jobs: each unlearns its forget set(s) and evaluates what
it wrote. The sequential icu variant runs in this process; the static variants and the scoring
of icu's continual stages run beside it (`mmunlearn.parallel.Beside`).

Under a data-parallel launch (`mmunlearn.distributed`) the variants run one after another, every
rank unlearning in step (`methods.runner`: DDP, sharded batches); rank 0 alone evaluates and
writes (icu's stages as they come), the others wait at a barrier after each variant."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mmunlearn.distributed import barrier, is_main, world_size
from mmunlearn.io import write_json
from mmunlearn.methods.runner import VARIANTS
from mmunlearn.params import runtime


_EVALUATORS: dict = {}  # per process and `run_branch` call: one Evaluator (data, processor, encodings) for its jobs


def _evaluator(params: dict, dirs: dict, progress: bool = False):
    from mmunlearn.metrics.evaluate import Evaluator

    key = (json.dumps(params, sort_keys=True, default=str), os.getcwd(), *sorted(dirs.items()))
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(params, base_dir=dirs["base"], data_dir=dirs["data"], progress=progress,
                                     oracle_root=dirs["oracle"])
    return _EVALUATORS[key]


def _job(args: tuple, beside=None) -> tuple[dict, dict]:
    """One variant: unlearn, then evaluate (rank 0). With `beside` (a `parallel.Beside`), the
    continual matrix's stages are scored there while the unlearning goes on: each stage's adapter
    is saved to a scratch directory and one job per stage loads it (`_stage_job`)."""
    from mmunlearn.methods.runner import save_checkpoint, unlearn_variant
    from mmunlearn.metrics.evaluate import baselines, evaluate_variant

    params, method, variant, dirs, evaluate, kr, progress = args
    ft, controls = baselines(dirs["eval"], kr) if evaluate and is_main() else (None, None)
    stream = beside is not None and ft is not None
    pending: dict[tuple[int, int], object] = {}
    with tempfile.TemporaryDirectory(prefix="stages-") as scratch:
        def on_stage(seed: int, t: int, n: int, model, pruned) -> None:
            if t < n:
                path = Path(scratch) / str(seed) / f"task{t:03d}"
                save_checkpoint(model, pruned, path)
                pending[seed, t] = beside.submit(_stage_job, (params, dirs, t, str(path)))

        log = unlearn_variant(params, method, variant, dirs["base"], dirs["finetuned"], dirs["data"],
                              dirs["unlearned"], progress, on_stage if stream else None)
        docs = {}
        if evaluate and is_main():
            def stages(seed: int) -> dict:
                return {t: f.result() for (s, t), f in pending.items() if s == seed}

            docs = evaluate_variant(_evaluator(params, dirs, progress), method, variant, dirs["unlearned"], ft,
                                    controls, stages if stream else None)
    barrier()
    return log, docs


def _stage_job(args: tuple):
    """One continual stage of a saved adapter: `evaluate.stage_correct`."""
    from mmunlearn.metrics.evaluate import stage_correct

    params, dirs, t, path = args
    ev = _evaluator(params, dirs)
    return stage_correct(ev, ev.load(Path(path)), t)


def run_branch(params: dict, method: str, variants=VARIANTS, evaluate: bool = True, kr: bool = True,
               workers: int | None = None, progress: bool = True, base_dir="models/base",
               finetuned_dir="models/finetuned", data_dir="data", unlearned_root="models/unlearned",
               oracle_root="models/oracle", eval_root="outputs/eval", metrics_dir="outputs/unlearn") -> dict:
    """Unlearning logs -> `metrics_dir/<method>.json`, checkpoints under `unlearned_root`, and
    (with `evaluate`) one evaluation document per variant and seed under `eval_root/<method>/`
    (`kr=False`: no KR and continual matrix, no baselines needed). The released rows by
    `variant/seed` ({} on the ranks other than 0 of a data-parallel launch).

    The sequential variant (icu: the longest, task after task) runs in this process; the static
    variants and the continual matrix's stages run beside it (`parallel.Beside`), so that the
    stages of a 100-task run are scored while it unlearns rather than after it."""
    from mmunlearn.methods.runner import refuse_deepspeed
    from mmunlearn.metrics.evaluate import write_method
    from mmunlearn.parallel import Beside

    refuse_deepspeed()

    dirs = {"base": str(base_dir), "finetuned": str(finetuned_dir), "data": str(data_dir),
            "unlearned": str(unlearned_root), "oracle": str(oracle_root), "eval": str(eval_root)}
    workers = runtime(params, "unlearn.workers") if workers is None else workers
    here = "icu" if "icu" in variants else None
    _EVALUATORS.clear()   # one call's cache (the workers fork with it empty)
    try:
        with Beside(workers, len(variants)) as beside:
            side = {v: beside.submit(_job, (params, method, v, dirs, evaluate, kr, progress))
                    for v in variants if v != here}
            own = _job((params, method, here, dirs, evaluate, kr, progress), beside if kr else None) if here else None
            results = [own if v == here else side[v].result() for v in variants]
    finally:
        _EVALUATORS.clear()
    if not is_main():
        return {}
    write_json(Path(metrics_dir) / f"{method}.json",
               {"processes": world_size(), **{v: log for v, (log, _) in zip(variants, results)}})
    if not evaluate:
        return {}
    return write_method(eval_root, method, {k: d for _, docs in results for k, d in docs.items()})
