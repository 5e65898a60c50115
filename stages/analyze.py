"""Stage analyze: metric agreement, reliability and UQS (SPEC section 8).

`python -m stages.analyze` is the DVC stage (params -> mmunlearn.analysis.pipeline.run, then
the sanity self-check, outputs/sanity.json);
`python -m stages.analyze --results multimodal_results.json [--unimodal FILE] --out DIR
[--ties ordinal --reliability pooled]` re-analyses released results and writes
analysis_results.json, uqs_weights.json and ranking_table.json to DIR, without loading any
model (no sanity check: there are no evaluation documents). The defaults are tie-aware tau-b
and within-dataset reliability; `--ties ordinal --reliability pooled` reproduces the paper."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmunlearn.errors import UserError

OUTPUTS = ("analysis_results", "uqs_weights", "ranking_table")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every stage
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m stages.analyze", description=__doc__.splitlines()[0])
    ap.add_argument("--results", help="multimodal_results.json (a JSON list of row objects)")
    ap.add_argument("--unimodal", help="unimodal_results.json, for the modality comparison")
    ap.add_argument("--out", help="directory for the three JSON files")
    ap.add_argument("--ties", choices=("tau_b", "ordinal"),
                    help="tau_b: tie-aware, constant metrics left out (default); ordinal: the paper's tie-break")
    ap.add_argument("--reliability", choices=("within", "pooled"),
                    help="Spearman figures feeding the UQS weights: per-dataset combined (default) or pooled (paper)")
    ap.add_argument("--draws", type=int, default=100, help="Dirichlet weight draws for stability")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def read_rows(path: str, name: str):
    """A released results file (JSON list of row objects) as a DataFrame; UserError if it is not one."""
    import pandas as pd

    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"{name}: cannot read {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{name}: {path} is not valid JSON: {err}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{name}: {path} must be a JSON list of row objects")
    return pd.DataFrame(data)


def reanalyze(args: argparse.Namespace) -> dict:
    from mmunlearn.analysis import analyze
    from mmunlearn.io import write_json

    rows = read_rows(args.results, "results")
    unimodal = read_rows(args.unimodal, "unimodal") if args.unimodal else None
    res = analyze(rows, unimodal, ties=args.ties or "tau_b", draws=args.draws, seed=args.seed,
                  reliability=args.reliability or "within")
    out = Path(args.out)
    for name in OUTPUTS:
        write_json(out / f"{name}.json", res[name])
    a = res["analysis_results"]
    best = min(res["ranking_table"].items(), key=lambda kv: kv[1]["UQS_rank"])[0]
    print(f"analyze: {a['n_models']} models, {len(res['ranking_table'])} methods, ties={a['ties']}, "
          f"reliability={a['reliability']}; "
          f"best by UQS: {best}; wrote {', '.join(n + '.json' for n in OUTPUTS)} to {out}")
    return res


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.results is None:
        given = [f"--{k}" for k in ("unimodal", "out", "ties", "reliability") if getattr(args, k) is not None]
        if given:
            parser().error(f"{' '.join(given)} needs --results")
        from mmunlearn.analysis.pipeline import run
        from stages._cli import main as stage_main

        stage_main(run)
        return
    if args.out is None:
        parser().error("--results needs --out DIR")
    try:
        reanalyze(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
