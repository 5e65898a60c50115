"""Shared stage entry: validated params first, one-line errors, non-zero exit."""
from __future__ import annotations

import sys
from typing import Callable

from mmunlearn.errors import UserError
from mmunlearn.params import load


def main(run: Callable[[dict], object], params_path: str = "params.yaml") -> None:
    try:
        params = load(params_path)
        run(params)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
