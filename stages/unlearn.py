"""Stage unlearn@<method>: one method over every seed and variant (icu, fiu, umu)."""
import argparse

from mmunlearn.params import ParamError
from stages._cli import main


def run(params: dict) -> None:
    from mmunlearn.methods.runner import unlearn

    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    args = ap.parse_args()
    if args.method not in params["methods"]:
        raise ParamError("methods", args.method, "--method is not listed in `methods`")
    unlearn(params, args.method)


if __name__ == "__main__":
    main(run)
