"""Stage unlearn@<method>: one method over every seed and variant (icu, fiu, umu), then every
metric of its unlearned models (one process per method: see the README's design notes)."""
import argparse

from mmunlearn.params import ParamError
from stages._cli import main


def run(params: dict) -> None:
    from mmunlearn.branch import run_branch
    from mmunlearn.methods import check

    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--no-evaluate", action="store_true", help="unlearn only (outputs/eval is not written)")
    args = ap.parse_args()
    if args.method not in params["methods"]:
        raise ParamError("methods", args.method, "--method is not listed in `methods`")
    check(params, [args.method])
    run_branch(params, args.method, evaluate=not args.no_evaluate)


if __name__ == "__main__":
    main(run)
