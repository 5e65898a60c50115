"""Stage assemble: generate profiles, render documents, build multi-view QA and splits."""
from mmunlearn.data.assemble import assemble
from stages._cli import main


def run(params: dict) -> None:
    stats = assemble(params)
    print(f"assembled {stats['profiles']} profiles, {stats['images']} images, {stats['qa']} QA, "
          f"{stats['forget_tasks']} forget tasks")


if __name__ == "__main__":
    main(run)
