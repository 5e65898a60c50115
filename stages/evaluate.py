"""Stage evaluate_baselines (`--baselines`: the fine-tuned model and the oracles); `--method <m>`
re-evaluates existing checkpoints of one method (stage unlearn@<m> does it after unlearning)."""
import argparse

from mmunlearn.params import ParamError
from stages._cli import main


def run(params: dict) -> None:
    from mmunlearn.metrics.evaluate import evaluate_baselines, evaluate_method

    ap = argparse.ArgumentParser()
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--method")
    group.add_argument("--baselines", action="store_true")
    args = ap.parse_args()
    if args.baselines:
        evaluate_baselines(params)
        return
    if args.method not in params["methods"]:
        raise ParamError("methods", args.method, "--method is not listed in `methods`")
    evaluate_method(params, args.method)


if __name__ == "__main__":
    main(run)
