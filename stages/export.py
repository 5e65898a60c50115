"""Stage export: the seven released JSON files, the dataset card and plot data in outputs/."""
from mmunlearn.export import release
from stages._cli import main


def run(params: dict) -> None:
    docs = release(params)
    print(f"export: {len(docs['multimodal_results.json'])} multimodal rows, "
          f"{len(docs['kr_pilot_results.json'])} KR probe samples -> outputs/")


if __name__ == "__main__":
    main(run)
