"""Splits over profiles (never rows): sequential forget tasks, retain, holdout, static splits."""
from __future__ import annotations

import numpy as np
import pandas as pd

# The forget sets every method is unlearned and evaluated on: ICU-Bench's sequential tasks, then
# the FIUBench and UMU-Bench static splits (`unlearn.fiu_ratio`, `unlearn.umu_ratio`).
VARIANTS = ("icu", "fiu", "umu")


def static_split_name(bench: str, ratio: float) -> str:
    """Column name of a static forget split, e.g. ('fiu', 0.05) -> 'fiu_forget05'."""
    pct = f"{ratio * 100:.6g}".replace(".", "p")
    return f"{bench}_forget{pct.zfill(2)}"


def assign_splits(profiles: pd.DataFrame, forget_tasks: int, profiles_per_task: int,
                  holdout: int, fiu_ratios: list[float], umu_ratios: list[float],
                  seed: int) -> pd.DataFrame:
    """Add `split` (forget/retain/holdout), `task` (1..N for forget, else 0) and one boolean
    column per static split (FIUBench, UMU-Bench) to a copy of `profiles`.

    Tasks and holdout alternate domains, so both domains are forgotten in every task. Static
    forget sets are nested prefixes of one seeded permutation of the trained profiles
    (forget + retain), one permutation per benchmark.
    """
    rng = np.random.default_rng([seed, 0x5B])
    queues = {d: list(rng.permutation(profiles.index[profiles.domain == d].to_numpy()))
              for d in ("medical", "labor")}
    need = forget_tasks * profiles_per_task + holdout
    if need >= len(profiles):
        raise ValueError(f"{need} forget + holdout profiles leave no retain profile among {len(profiles)}")
    out = profiles.copy()
    out["split"] = "retain"
    out["task"] = 0
    turn = 0

    def take() -> int:
        nonlocal turn
        domain = ("medical", "labor")[turn % 2]
        if not queues[domain]:
            domain = ("labor", "medical")[turn % 2]
        turn += 1
        return int(queues[domain].pop(0))

    for t in range(1, forget_tasks + 1):
        turn = t + 1  # alternate which domain opens a task, so odd task sizes stay balanced
        for _ in range(profiles_per_task):
            i = take()
            out.loc[i, ["split", "task"]] = ["forget", t]
    for _ in range(holdout):
        out.loc[take(), "split"] = "holdout"
    out["task"] = out["task"].astype("int64")
    trained = out.index[out.split != "holdout"].to_numpy()
    for bench, ratios, salt in (("fiu", fiu_ratios, 0xF1), ("umu", umu_ratios, 0x0A)):
        perm = np.random.default_rng([seed, salt]).permutation(trained)
        for r in ratios:
            k = max(1, int(round(r * len(trained))))
            col = np.zeros(len(out), dtype=bool)
            col[out.index.get_indexer(perm[:k])] = True
            out[static_split_name(bench, r)] = col
    return out
