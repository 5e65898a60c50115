"""The evaluator's fixed row samples: each variant's retain rows (`metrics.eval_retain_rows`), the
continual retain curve's rows within them (`metrics.continual_retain_rows`), and the forget rows
whose failures are probed (`metrics.probe_rows`)."""
import copy
import os

import pandas as pd

from mmunlearn.methods.runner import variant_tasks


def evaluator(repo, params, **metrics):
    from mmunlearn.metrics.evaluate import Evaluator

    p = copy.deepcopy(params)
    p["metrics"].update(metrics)
    return Evaluator(p, base_dir=repo / "models" / "base", data_dir=repo / "data")


def test_retain_rows_are_one_fixed_sample_per_variant(smoke_pipeline, smoke_params):
    profiles = pd.read_parquet(smoke_pipeline / "data" / "profiles.parquet")
    ev = evaluator(smoke_pipeline, smoke_params, eval_retain_rows=40, continual_retain_rows=16)
    again = evaluator(smoke_pipeline, smoke_params, eval_retain_rows={"smoke": 40, "small": 3, "full": 3})
    whole = evaluator(smoke_pipeline, smoke_params, eval_retain_rows=0)
    drawn = {}
    for variant in ("icu", "fiu", "umu"):
        retain_ids = set(variant_tasks(variant, smoke_params, profiles)[1])
        everything = whole.sets(variant)["retain"]
        assert {r["profile_id"] for r in everything} == retain_ids and len(everything) > 40
        rows = ev.sets(variant)["retain"]
        ids = [r["qa_id"] for r in rows]
        assert len(ids) == 40 and set(ids) < {r["qa_id"] for r in everything}
        assert ids == [r["qa_id"] for r in everything if r["qa_id"] in set(ids)]          # in their order
        assert [r["qa_id"] for r in again.sets(variant)["retain"]] == ids                 # the scale's value
        forget = [r["qa_id"] for r in ev.sets(variant)["forget"]]                      # forget: every row
        assert forget == [r["qa_id"] for r in whole.sets(variant)["forget"]]
        drawn[variant] = ids
    assert drawn["fiu"] != drawn["umu"]
    curve = [r["qa_id"] for r in ev.retain_subsample()]
    assert len(curve) == 16 and set(curve) < set(drawn["icu"])   # the last stage reads the final retain pass


def test_probes_ask_the_failed_rows_of_a_fixed_forget_sample(smoke_pipeline, smoke_params):
    from mmunlearn.metrics.evaluate import Pass, run_probes, sample

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ev = evaluator(smoke_pipeline, smoke_params, probe_rows=8)
    model = ev.load(smoke_pipeline / "models" / "finetuned")
    forget = ev.sets("fiu")["forget"]
    assert len(forget) > 8
    correct = [i % 3 == 0 for i in range(len(forget))]        # every third row answered
    frame = pd.DataFrame({"qa_id": [r["qa_id"] for r in forget], "correct": correct,
                          "chosen_option": -1, "generated": ""})
    out, score = run_probes(ev, model, Pass(frame, None), forget, seed=0)
    asked = {r["qa_id"] for r in sample(forget, 8, [0, 0x9B])}
    failed = [r["qa_id"] for r, ok in zip(forget, correct) if not ok and r["qa_id"] in asked]
    assert [o["sample_id"] for o in out] == failed and 0 < len(failed) <= 8
    assert all(o["probes"] for o in out)
    assert score is None or 0.0 <= score <= 1.0
    everyone = evaluator(smoke_pipeline, smoke_params, probe_rows=0)
    out_all, _ = run_probes(everyone, model, Pass(frame, None), forget, seed=0)
    assert [o["sample_id"] for o in out_all] == [r["qa_id"] for r, ok in zip(forget, correct) if not ok]
