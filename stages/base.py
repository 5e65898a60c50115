"""Stage base: build the tiny VLM offline and pretrain it on public profiles (or record a real checkpoint)."""
from mmunlearn.models.base import build_base
from stages._cli import main


def run(params: dict) -> None:
    m = build_base(params)
    print(f"base: {m}")


if __name__ == "__main__":
    main(run)
