"""Stage unlearn@<method>: one method over every seed and variant (icu, fiu, umu), then every
metric of its unlearned models (one process per method: see the README's design notes)."""
import argparse

from mmunlearn.params import ParamError
from stages._cli import main


def run(params: dict) -> None:
    from mmunlearn.methods.runner import unlearn
    from mmunlearn.metrics.evaluate import evaluate_method

    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--no-evaluate", action="store_true", help="unlearn only (outputs/eval is not written)")
    args = ap.parse_args()
    if args.method not in params["methods"]:
        raise ParamError("methods", args.method, "--method is not listed in `methods`")
    unlearn(params, args.method)
    if not args.no_evaluate:
        evaluate_method(params, args.method)


if __name__ == "__main__":
    main(run)
