"""Stage report: paper-ready figures and an offline leaderboard page in outputs/report/."""
import subprocess

from mmunlearn.report import build_report
from stages._cli import main


def commit() -> str | None:
    """The checked-out commit (`+` when the work tree differs from it), for the page's footer."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def run(params: dict) -> None:
    out = build_report(params, commit=commit())
    print(f"report: {len(list((out / 'figures').glob('*.png')))} figures (PNG + SVG), {out / 'index.html'}")


if __name__ == "__main__":
    main(run)
