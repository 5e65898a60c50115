"""Stage validate: great-expectations over data/ -> outputs/validation.json; any failure exits 1."""
import sys

from mmunlearn.io import write_json, write_metrics
from stages._cli import main


def run(params: dict) -> None:
    from mmunlearn.data.validate import validate_dataset

    report = validate_dataset(params)
    write_json("outputs/validation.json", {"success": report.success, "checks": report.checks,
                                           "failed": [c["name"] for c in report.failures]})
    write_metrics("outputs/metrics/validation.json", {"ok": report.success, "n_failed": len(report.failures)})
    if not report.success:
        for c in report.failures:
            ids = ", ".join(c["offending"]) or c.get("error") or f"observed {c.get('observed_value')}"
            print(f"error: validation failed: {c['name']} ({c['expectation']} on {c['table']}"
                  f"{'.' + c['column'] if c.get('column') else ''}): {ids}", file=sys.stderr)
        sys.exit(1)
    print(f"validation passed: {len(report.checks)} expectations")


if __name__ == "__main__":
    main(run)
