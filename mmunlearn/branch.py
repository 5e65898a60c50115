"""One method's branch of the DAG (stage unlearn@<method>): unlearn every variant, then evaluate
its models. The variants are independent jobs (`mmunlearn.parallel`): each unlearns its forget
set(s) and evaluates what it wrote, side by side with the others.

Under a data-parallel launch (`mmunlearn.distributed`) the variants run one after another, every
rank unlearning in step (`methods.runner`: DDP, sharded batches); rank 0 alone evaluates and
writes, the others wait at a barrier after each variant."""
from __future__ import annotations

from pathlib import Path

from mmunlearn.distributed import barrier, is_main, world_size
from mmunlearn.io import write_json
from mmunlearn.methods.runner import VARIANTS
from mmunlearn.params import runtime


def _job(args: tuple) -> tuple[dict, dict]:
    from mmunlearn.methods.runner import unlearn_variant
    from mmunlearn.metrics.evaluate import Evaluator, baselines, evaluate_variant

    params, method, variant, dirs, evaluate, kr, progress = args
    log = unlearn_variant(params, method, variant, dirs["base"], dirs["finetuned"], dirs["data"], dirs["unlearned"],
                          progress)
    docs = {}
    if evaluate and is_main():
        ev = Evaluator(params, base_dir=dirs["base"], data_dir=dirs["data"], progress=progress,
                       oracle_root=dirs["oracle"])
        ft, controls = baselines(dirs["eval"], kr)
        docs = evaluate_variant(ev, method, variant, dirs["unlearned"], ft, controls)
    barrier()
    return log, docs


def run_branch(params: dict, method: str, variants=VARIANTS, evaluate: bool = True, kr: bool = True,
               workers: int | None = None, progress: bool = True, base_dir="models/base",
               finetuned_dir="models/finetuned", data_dir="data", unlearned_root="models/unlearned",
               oracle_root="models/oracle", eval_root="outputs/eval", metrics_dir="outputs/unlearn") -> dict:
    """Unlearning logs -> `metrics_dir/<method>.json`, checkpoints under `unlearned_root`, and
    (with `evaluate`) one evaluation document per variant and seed under `eval_root/<method>/`
    (`kr=False`: no KR and continual matrix, no baselines needed). The released rows by
    `variant/seed` ({} on the ranks other than 0 of a data-parallel launch)."""
    from mmunlearn.methods.runner import refuse_deepspeed
    from mmunlearn.metrics.evaluate import write_method
    from mmunlearn.parallel import run_jobs

    refuse_deepspeed()

    dirs = {"base": str(base_dir), "finetuned": str(finetuned_dir), "data": str(data_dir),
            "unlearned": str(unlearned_root), "oracle": str(oracle_root), "eval": str(eval_root)}
    jobs = [(params, method, v, dirs, evaluate, kr, progress) for v in variants]
    workers = runtime(params, "unlearn.workers") if workers is None else workers
    results = run_jobs(_job, jobs, workers)
    if not is_main():
        return {}
    write_json(Path(metrics_dir) / f"{method}.json",
               {"processes": world_size(), **{v: log for v, (log, _) in zip(variants, results)}})
    if not evaluate:
        return {}
    return write_method(eval_root, method, {k: d for _, docs in results for k, d in docs.items()})
