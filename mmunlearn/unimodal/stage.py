"""Stage `unimodal`: the unimodal branches' rows (`unimodal_results.json` format) in
outputs/unimodal/results.json: the text-only branch always (it needs only the assembled data and
models/base), the CIFAR-10 branch when `unimodal.cifar10_dir` is set (skipped with a message
otherwise)."""
from __future__ import annotations

from pathlib import Path

from mmunlearn.errors import UserError
from mmunlearn.io import write_json
from mmunlearn.params import ParamError


def run(params: dict, out_path="outputs/unimodal/results.json", base_dir="models/base",
        data_dir="data") -> list[dict]:
    from mmunlearn.methods import check
    from mmunlearn.unimodal import text
    from mmunlearn.unimodal.cifar import run_branch, validate_cfg

    cfg = params.get("unimodal") or {}
    cifar_dir = cfg.get("cifar10_dir", "")
    if not isinstance(cifar_dir, str):
        raise ParamError("unimodal.cifar10_dir", cifar_dir, "must be a path string ('' = branch not run)")
    validate_cfg(cfg["cifar"])
    text.text_cfg(params)
    check(params, params["methods"])
    if cifar_dir and not Path(cifar_dir).is_dir():
        raise UserError(f"unimodal.cifar10_dir={cifar_dir!r}: no such directory "
                        "(a cifar-10-batches-py folder; '' skips the branch)")
    out = text.run_branch(params, base_dir=base_dir, data_dir=data_dir, progress=True)
    rows: list[dict] = list(out["rows"])
    print(text_summary(out))
    if cifar_dir:
        cifar_rows = run_branch(cfg["cifar"], cifar_dir, params["seeds"], progress=True)
        rows += cifar_rows
        print(f"unimodal: CIFAR-10 branch: {len(cifar_rows)} rows")
    else:
        print("unimodal: CIFAR-10 branch skipped (unimodal.cifar10_dir is empty)")
    write_json(out_path, rows)
    return rows


def text_summary(out: dict) -> str:
    """One line: rows, what was skipped, how well the fine-tuned LM memorised, CPU seconds."""
    seeds = out["seeds"]
    methods = sorted({r["method"] for r in out["rows"]})
    skipped = sorted({m for s in seeds.values() for m in s["skipped"]})
    memo = "; ".join(f"seed {k} trained {v['memorisation']['trained_acc']:.2f} / holdout "
                     f"{v['memorisation']['holdout_acc']:.2f}" for k, v in seeds.items())
    cpu = sum(v["seconds"]["total"] for v in seeds.values())
    why = f" ({', '.join(skipped)} skipped: refused on a language model alone)" if skipped else ""
    settings = len({r["dataset"] for r in out["rows"]})
    return (f"unimodal: text branch: {len(out['rows'])} rows = {settings} settings x {len(methods)} methods x "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}{why}; fine-tuned LM accuracy {memo}; {cpu:.1f} s CPU")
