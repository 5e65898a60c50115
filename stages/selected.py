"""Stage selected: headline metrics and continual plot of the focus `method`."""
from mmunlearn.export.selected import select
from stages._cli import main


def run(params: dict) -> None:
    m = select(params)
    print("selected " + m["method"] + ": " + "  ".join(f"{k} {m.get(k)}" for k in ("FA", "RA", "MIA", "AD", "JS", "KR", "UQS")))


if __name__ == "__main__":
    main(run)
