"""Stage unimodal: unimodal branches (CIFAR-10) -> outputs/unimodal/results.json."""
from mmunlearn.unimodal.stage import run
from stages._cli import main


if __name__ == "__main__":
    main(run)
