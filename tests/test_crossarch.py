"""The cross-architecture branch's size (`crossarch.profiles`, `crossarch.public_profiles_per_domain`)."""
from __future__ import annotations

import copy

import pandas as pd
import pytest

from mmunlearn.crossarch import branch_data, branch_params
from mmunlearn.errors import UserError
from mmunlearn.methods.runner import variant_tasks
from mmunlearn.params import validate_crossarch


def test_branch_data_keeps_the_forget_set_and_samples_the_rest(smoke_dataset, tmp_path):
    root, params = smoke_dataset
    data = root / "data"
    profiles = pd.read_parquet(data / "profiles.parquet")
    tasks, retain = variant_tasks("umu", params, profiles)
    forget = {pid for _, ids in tasks for pid in ids}
    trained = len(forget) + len(retain)
    keep = len(forget) + 4
    out = branch_data(params, "umu", keep, data, tmp_path / "a")
    kept = pd.read_parquet(out / "profiles.parquet")
    holdout = kept[kept.split == "holdout"]
    assert forget <= set(kept.profile_id)
    assert len(kept) - len(holdout) == keep
    # holdout people in the main run's holdout:trained proportion (smoke: 6 of 24, 18 trained)
    assert len(holdout) == round((profiles.split == "holdout").sum() * keep / trained)
    qa = pd.read_parquet(out / "qa.parquet")
    full_qa = pd.read_parquet(data / "qa.parquet")
    assert len(qa) == full_qa.profile_id.isin(set(kept.profile_id)).sum() and set(qa.profile_id) == set(kept.profile_id)
    assert (out / qa.image.dropna().iloc[0]).is_file()
    # the branch sees the same forget set: its own split of the kept people
    again_tasks, _ = variant_tasks("umu", params, kept)
    assert {pid for _, ids in again_tasks for pid in ids} == forget
    again = branch_data(params, "umu", keep, data, tmp_path / "b")
    assert pd.read_parquet(again / "profiles.parquet").profile_id.tolist() == kept.profile_id.tolist()
    assert branch_data(params, "umu", None, data, tmp_path / "c") == data


def test_branch_data_refuses_a_size_below_the_forget_set(smoke_dataset, tmp_path):
    root, params = smoke_dataset
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    tasks, _ = variant_tasks("icu", params, profiles)
    n = sum(len(ids) for _, ids in tasks)
    with pytest.raises(UserError, match=rf"crossarch.profiles.smoke={n}: the icu forget set alone has {n}"):
        branch_data(params, "icu", n, root / "data", tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_branch_base_takes_its_own_public_profiles(base_params):
    p = copy.deepcopy(base_params)
    p["scale"] = "small"
    p["crossarch"]["public_profiles_per_domain"] = {"smoke": None, "small": 7, "full": None}
    assert branch_params(p)["base"]["public_profiles_per_domain"] == 7
    p["scale"] = "full"
    assert branch_params(p)["base"]["public_profiles_per_domain"] == base_params["base"]["public_profiles_per_domain"]


def test_one_value_for_every_scale(base_params):
    p = copy.deepcopy(base_params)
    p["scale"] = "small"
    p["crossarch"]["public_profiles_per_domain"] = 9
    validate_crossarch(p["crossarch"])
    assert branch_params(p)["base"]["public_profiles_per_domain"] == 9
    p["crossarch"]["public_profiles_per_domain"] = None
    validate_crossarch(p["crossarch"])
    assert branch_params(p)["base"]["public_profiles_per_domain"] == base_params["base"]["public_profiles_per_domain"]
