"""The paper's row metrics, in the order of its released rows: FA, RA, MIA, AD, JS and the
reference `retrained_distance` (what each reads: `metrics.columns`)."""
from __future__ import annotations

from mmunlearn.metrics.divergence import activation_distance, js_divergence, oracle_distance
from mmunlearn.metrics.mia import accuracy
from mmunlearn.metrics.registry import metric


@metric("FA", higher_is_better=False, reads=("forget",), headline=True)
def forget_accuracy(forget) -> float | None:
    """FA: share of the forget rows answered correctly."""
    return accuracy(forget.frame.correct.to_numpy())


@metric("RA", higher_is_better=True, reads=("retain",), headline=True)
def retain_accuracy(retain) -> float | None:
    """RA: share of the retain rows answered correctly."""
    return accuracy(retain.frame.correct.to_numpy())


@metric("MIA", higher_is_better=False, reads=("mia",), headline=True)
def mia_member_rate(mia) -> float | None:
    """MIA: share of forget rows the class-balanced attack calls member (`mia_attack`)."""
    return mia["member_rate"]


@metric("AD", higher_is_better=False, reads=("forget", "oracle"), headline=True, bounded=False)
def forget_activation_distance(forget, oracle) -> float | None:
    """AD: mean L2 distance of pooled hidden states to the oracle's on the forget rows."""
    return activation_distance(forget.scores.hidden, oracle.hidden)


@metric("JS", higher_is_better=False, reads=("forget", "oracle"), headline=True)
def forget_js_divergence(forget, oracle) -> float | None:
    """JS: mean Jensen-Shannon divergence to the oracle's answer distributions on the forget rows."""
    return js_divergence(forget.scores.dist, oracle.dist)


@metric("retrained_distance", higher_is_better=False, reads=("weights",), bounded=False)
def retrained_distance(weights) -> float | None:
    """d(M_hat, M_star): mean L2 distance of the LoRA target weights to the oracle's."""
    return oracle_distance(*weights)
