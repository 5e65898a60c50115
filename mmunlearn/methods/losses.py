"""The formulas of SPEC section 6 as pure functions of log-probabilities (testable by hand).

NLL is the mean token cross-entropy over answer tokens; sequence log-probabilities are sums over
a sequence's answer tokens. Loss terms that several methods share (`npo_term`) live here too, so a
method's file imports only `base` and this module (the deps of its `unlearn@<method>` item).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nll(token_lp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token negative log-likelihood over all answer tokens of a batch."""
    return -(token_lp * mask).sum() / mask.sum().clamp(min=1)


def npo(seq_lp: torch.Tensor, seq_lp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: -(2/beta) mean_i log sigmoid(-beta (log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)))."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (seq_lp - seq_lp_ref)).mean()


def npo_term(ctx, forget: dict, beta: float) -> torch.Tensor:
    """NPO of a forget batch: the trained model's sequence log-probabilities against the frozen
    reference's (no gradient through the reference); the forget term of NPO and NPO-Diff."""
    from mmunlearn.methods.base import seq_logprob_of  # base imports this module

    with torch.no_grad():
        ref = seq_logprob_of(ctx.ref, forget)
    return npo(seq_logprob_of(ctx.model, forget), ref, beta)


def kl_ref_theta(logp_ref: torch.Tensor, logp_theta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) per answer position, averaged over answer tokens.

    logp_*: [B, T, V] log-probabilities; mask: [B, T]."""
    kl = (logp_ref.exp() * (logp_ref - logp_theta)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)
