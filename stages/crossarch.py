"""Stage crossarch: base -> finetune -> oracle -> unlearn -> evaluate on a second VLM family (tiny-blip2)."""
from stages._cli import main


def run(params: dict) -> None:
    from mmunlearn.crossarch import run as run_branch

    run_branch(params)


if __name__ == "__main__":
    main(run)
