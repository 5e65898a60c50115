"""Stage `unimodal`: the unimodal branches' rows (`unimodal_results.json` format) in
outputs/unimodal/results.json; a branch whose data is not configured is skipped with a message."""
from __future__ import annotations

from pathlib import Path

from mmunlearn.errors import UserError
from mmunlearn.io import write_json
from mmunlearn.params import ParamError


def run(params: dict, out_path="outputs/unimodal/results.json") -> list[dict]:
    from mmunlearn.unimodal.cifar import run_branch, validate_cfg

    cfg = params.get("unimodal") or {}
    cifar_dir = cfg.get("cifar10_dir", "")
    if not isinstance(cifar_dir, str):
        raise ParamError("unimodal.cifar10_dir", cifar_dir, "must be a path string ('' = branch not run)")
    validate_cfg(cfg["cifar"])
    rows: list[dict] = []
    if cifar_dir:
        if not Path(cifar_dir).is_dir():
            raise UserError(f"unimodal.cifar10_dir={cifar_dir!r}: no such directory "
                            "(a cifar-10-batches-py folder; '' skips the branch)")
        rows += run_branch(cfg["cifar"], cifar_dir, params["seeds"], progress=True)
        print(f"unimodal: CIFAR-10 branch: {len(rows)} rows")
    else:
        print("unimodal: CIFAR-10 branch skipped (unimodal.cifar10_dir is empty)")
    write_json(out_path, rows)
    return rows
