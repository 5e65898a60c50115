"""The row metrics: the columns every evaluator writes for one model, one registered function each
(`metrics.registry`, with its metadata). The main evaluator (`metrics.evaluate`), the text-only
branch and the cross-architecture branch all compute a row by `row_values`, so a metric defined
here reaches every branch and `multimodal_results.json`, and a headline one the agreement
analysis, the UQS and the leaderboard as well.

`core.py` holds the paper's columns; every other module of this package is one more metric,
loaded after them in file-name order (`load`). Adding a metric is adding a file, e.g.
`fa_text.py`:

    from mmunlearn.metrics.mia import accuracy
    from mmunlearn.metrics.registry import metric

    @metric("FA_text", higher_is_better=False, reads=("forget",))
    def text_forget_accuracy(forget):
        frame = forget.frame
        return accuracy(frame.correct[frame.view == "text"].to_numpy())

The inputs a metric `reads`, as the evaluators provide them (a metric whose input is missing,
e.g. without an oracle, is None):

- `forget`, `retain`: the model's `Pass` on the forget / retain rows (`frame` has `correct` by
  `rows.row_correct`, `view`, `form`; `scores` holds hidden states and answer distributions);
- `holdout`: its `Scores` on the holdout rows;
- `mia`: `evaluate.mia_metrics` on forget (members) vs holdout (non-members);
- `oracle`: the oracle's `Scores` on the forget rows;
- `weights`: (model, oracle) LoRA target weights.
"""
from __future__ import annotations

import importlib
import pkgutil

from mmunlearn.metrics.registry import INFO, MetricInfo, as_float


def load() -> None:
    """Import `core`, then every other module of the package in file-name order (registration
    order is the column order)."""
    importlib.import_module(f"{__name__}.core")
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{mod}")


def row_metrics() -> list[MetricInfo]:
    """The row metrics (registered with `reads`), in registration order: the column order."""
    load()
    return [i for i in INFO.values() if i.reads]


def headline_metrics() -> tuple[str, ...]:
    """Names of the headline metrics, in registration order."""
    return tuple(i.name for i in row_metrics() if i.headline)


def lower_is_better() -> frozenset[str]:
    """Row metrics where a lower value is the better unlearning."""
    return frozenset(i.name for i in row_metrics() if i.higher_is_better is False)


def row_values(inputs: dict) -> dict[str, float | None]:
    """{name: value} of every row metric, in registration order; None where an input it reads is
    missing (None or absent) or its value is undefined (NaN / inf)."""
    out = {}
    for info in row_metrics():
        args = {k: inputs.get(k) for k in info.reads}
        out[info.name] = None if any(v is None for v in args.values()) else as_float(info.fn(**args))
    return out
