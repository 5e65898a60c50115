"""Shared stage entry: validated params first, one-line errors, non-zero exit; under a data-parallel
launch (torchrun / accelerate launch) the stage runs inside the process group
(`mmunlearn.distributed.session`)."""
from __future__ import annotations

import sys
from typing import Callable

from mmunlearn.distributed import session
from mmunlearn.errors import UserError
from mmunlearn.params import load, runtime


def main(run: Callable[[dict], object], params_path: str = "params.yaml") -> None:
    try:
        params = load(params_path)
        with session(runtime(params, "distributed.timeout_minutes")):
            run(params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
