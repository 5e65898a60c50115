"""Load and validate params.yaml: every stage calls `load()` before any heavy compute.

A bad value raises `ParamError` whose message is one line naming the key and the value;
`stages._cli.main` turns it into that line on stderr and exit status 2.
"""
from __future__ import annotations

import copy
import math
import numbers
import pkgutil
from pathlib import Path
from typing import Any, Sequence

from mmunlearn.errors import UserError

SCALES = ("smoke", "small", "full")
METHOD_INFRA = ("base", "runner", "losses")   # modules of mmunlearn/methods that are not methods
TOP_LEVEL = ("seed", "seeds", "scale", "model", "method", "methods",
             "data", "base", "finetune", "oracle", "unlearn", "metrics", "analysis", "runtime")
# Runtime knobs (`runtime.<key>`): worker counts, which cannot change results (mmunlearn.parallel),
# and the process-group timeout of a data-parallel launch (mmunlearn.distributed), so no stage lists
# them and editing one reruns nothing. Each worker count was `<key>` in its section before.
RUNTIME = ("data.workers", "oracle.workers", "unlearn.workers", "metrics.workers", "unimodal.text.workers",
           "distributed.timeout_minutes")
# Runtime switches (true / false): activation checkpointing recomputes the same activations in the
# backward pass (less memory, same results).
RUNTIME_FLAGS = ("gradient_checkpointing",)
# Per-model presets (`presets.<model id>`) may override values of these sections only: what a model
# needs to train and run (LoRA, learning rates, batches, dtype), never the data or the analysis.
PRESET_SECTIONS = ("base", "finetune", "unlearn", "metrics", "runtime")
TINY_PRESETS = ("tiny-llava", "tiny-blip2")   # = mmunlearn.models.vlm.TINY_PRESETS (not imported: no stage dep)
DTYPES = ("float32", "bfloat16")              # base.dtype: a real checkpoint's weights on a GPU
DATA_SOURCES = ("generated", "mllmu", "umu", "fiu")   # benchmarks: mmunlearn.data.sources.SOURCES
TIES = ("tau_b", "ordinal")            # = mmunlearn.analysis.TIES (not imported: pandas/scipy)
RELIABILITY = ("within", "pooled")     # = mmunlearn.analysis.RELIABILITY


class ParamError(UserError, ValueError):
    """A params.yaml value that no stage can run with."""

    def __init__(self, key: str, value: Any, why: str):
        self.key, self.value, self.why = key, value, why
        super().__init__(f"params: {key}={value!r}: {why}")


def method_names() -> tuple[str, ...]:
    """The methods: one module `mmunlearn/methods/<name>.py` each (the registry's files, listed
    without importing them, so stages that run no method never import torch). A method checks
    its own block `unlearn.<name>` (`Method.configure`) where it runs."""
    path = Path(__file__).parent / "methods"
    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(path)]) if m.name not in METHOD_INFRA))


def read_yaml(path: str | Path) -> Any:
    """YAML 1.2 (ruamel): `1e-5` is a float, `no` is a string."""
    from ruamel.yaml import YAML

    with open(path) as fh:
        return YAML(typ="safe", pure=True).load(fh)


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate params, then apply the selected model's preset (`presets.<model>`, if
    any): the one place where a preset takes effect. Returns the plain dict."""
    path = Path(path)
    if not path.exists():
        raise ParamError("params", str(path), "file not found")
    params = read_yaml(path)
    validate(params)
    validate_presets(params)
    return for_model(params, params["model"])


# ---- per-model presets ----------------------------------------------------------------------------

def _is_per_scale(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(SCALES)


def _overrides(node: Any, base: Any, prefix: str) -> dict[str, Any]:
    """{dotted key: value} of a preset block over `base`: a mapping descends into the same mapping
    of `base`; a leaf, a list or a per-scale mapping `{smoke, small, full}` replaces the value
    whole. A key that `base` does not have is an error naming it (a preset only overrides)."""
    if not isinstance(node, dict) or not node:
        raise ParamError(prefix, node, "must be a mapping of keys to override")
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}"
        if not isinstance(base, dict) or key not in base:
            raise ParamError(dotted, value, "not a key of params.yaml (a preset only overrides existing keys)")
        if isinstance(value, dict) and not _is_per_scale(value) and not _is_per_scale(base[key]):
            out.update(_overrides(value, base[key], dotted))
        else:
            out[dotted] = value
    return out


def preset_overrides(params: dict, model: str) -> dict[str, Any]:
    """{dotted key: value} that `presets.<model>` sets; {} without a preset for `model`."""
    presets = params.get("presets") or {}
    if not isinstance(presets, dict):
        raise ParamError("presets", presets, "must be a mapping of model id -> overrides")
    if model not in presets:
        return {}
    block = presets[model]
    where = f"presets[{model}]"
    if not isinstance(block, dict) or not block:
        raise ParamError(where, block, "must be a mapping of sections to override")
    bad = sorted(set(block) - set(PRESET_SECTIONS))
    if bad:
        raise ParamError(f"{where}.{bad[0]}", block[bad[0]], f"a preset overrides only {', '.join(PRESET_SECTIONS)}")
    over = _overrides(block, {k: params.get(k) for k in block}, where)
    return {k.removeprefix(where + "."): v for k, v in over.items()}


def _set(params: dict, dotted: str, value: Any) -> None:
    node = params
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = copy.deepcopy(value)


def for_model(params: dict, model: str) -> dict:
    """The params as `model` sees them: a copy with `model` set, the overrides of the preset
    applied so far undone and those of `presets.<model>` applied. The crossarch branch calls it
    with its own model, so the main model's preset never reaches it. `params["preset"]` records
    what was applied: {"model": its key, "replaced": {dotted key: the value before}}, or None."""
    out = copy.deepcopy(params)
    applied = out.pop("preset", None) or {}
    for dotted, before in applied.get("replaced", {}).items():
        _set(out, dotted, before)
    out["model"] = model
    over = preset_overrides(out, model)
    replaced = {}
    for dotted, value in over.items():
        replaced[dotted] = copy.deepcopy(_get(out, dotted))
        _set(out, dotted, value)
    out["preset"] = {"model": model, "replaced": replaced} if over else None
    return out


def validate_presets(params: dict) -> None:
    """Every preset, applied over the defaults, gives valid params; an error names the preset."""
    presets = params.get("presets") or {}
    if not isinstance(presets, dict):
        raise ParamError("presets", presets, "must be a mapping of model id -> overrides")
    for model in presets:
        if not isinstance(model, str) or not model or model in TINY_PRESETS:
            raise ParamError("presets", model, "keys must be real checkpoint ids or paths (tiny presets use the defaults)")
        try:
            validate(for_model(params, model))
        except ParamError as err:
            if err.key.startswith("presets["):
                raise
            raise ParamError(f"presets[{model}] -> {err.key}", err.value, err.why) from None


# ---- the one set of value checks (params.yaml, the text branch, CIFAR-10): ParamError(key, value, why)

def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def integer(key: str, value: Any, lo: int | None = None, allow_none: bool = False) -> int | None:
    """An integer (>= `lo`), or None where `allow_none`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParamError(key, value, "must be an integer" + (" or null" if allow_none else ""))
    if lo is not None and value < lo:
        raise ParamError(key, value, f"must be >= {lo}")
    return int(value)


def positive(key: str, value: Any, allow_none: bool = False) -> float | None:
    """A finite number > 0, or None where `allow_none`."""
    if value is None and allow_none:
        return None
    if not _number(value) or not value > 0:
        raise ParamError(key, value, "must be a positive number" + (" or null" if allow_none else ""))
    return float(value)


def nonnegative(key: str, value: Any) -> float:
    if not _number(value) or value < 0:
        raise ParamError(key, value, "must be a non-negative number")
    return float(value)


def ratio(key: str, value: Any) -> float:
    """A share strictly between 0 and 1."""
    if not _number(value):
        raise ParamError(key, value, "must be a number")
    if not 0 < value < 1:
        raise ParamError(key, value, "must be in (0, 1)")
    return float(value)


def unit(key: str, value: Any) -> float:
    """A number in [0, 1]."""
    if not _number(value) or not 0 <= value <= 1:
        raise ParamError(key, value, "must be a number in [0, 1]")
    return float(value)


def is_per_scale(value: Any) -> bool:
    """A value written per scale (`{smoke: .., small: .., full: ..}`; `per_scale` checks it)."""
    return isinstance(value, dict)


def by_scale(value: Any, params: dict) -> Any:
    """A param that is either one value or a mapping {smoke, small, full} -> value, at the run's scale."""
    return value[params["scale"]] if isinstance(value, dict) else value


def per_scale(key: str, value: Any, check) -> None:
    """`check(key, value)` of one value, or of each scale's value of a `{smoke, small, full}` mapping."""
    if isinstance(value, dict):
        for scale in SCALES:
            if scale not in value:
                raise ParamError(f"{key}.{scale}", None, "missing")
            check(f"{key}.{scale}", value[scale])
        extra = sorted(set(value) - set(SCALES))
        if extra:
            raise ParamError(f"{key}.{extra[0]}", value[extra[0]], f"unknown scale (one of {', '.join(SCALES)})")
    else:
        check(key, value)


def keys(key: str, block: Any, expected: Sequence[str]) -> None:
    """A mapping with exactly the `expected` keys."""
    if not isinstance(block, dict):
        raise ParamError(key, block, "must be a mapping")
    for k in expected:
        if k not in block:
            raise ParamError(f"{key}.{k}", None, "missing")
    extra = sorted(set(block) - set(expected))
    if extra:
        raise ParamError(f"{key}.{extra[0]}", block[extra[0]], f"unknown key (expected {', '.join(expected)})")


def _get(params: dict, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(dotted, None, "missing")
        node = node[part]
    return node


def data_scale(params: dict) -> dict:
    """Count preset of the current scale, with derived totals."""
    preset = dict(params["data"]["scales"][params["scale"]])
    preset["profiles"] = 2 * preset["profiles_per_domain"]
    preset["forget_profiles"] = preset["forget_tasks"] * preset["profiles_per_task"]
    preset["retain_profiles"] = preset["profiles"] - preset["forget_profiles"] - preset["holdout"]
    return preset


def validate(params: Any) -> None:
    if not isinstance(params, dict):
        raise ParamError("params", params, "must be a mapping")
    for key in TOP_LEVEL:
        if key not in params:
            raise ParamError(key, None, "missing")
    integer("seed", params["seed"], lo=0)
    seeds = params["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise ParamError("seeds", seeds, "must be a non-empty list of integers")
    for i, s in enumerate(seeds):
        integer(f"seeds[{i}]", s, lo=0)
    if len(set(seeds)) != len(seeds):
        raise ParamError("seeds", seeds, "must not repeat")
    if params["scale"] not in SCALES:
        raise ParamError("scale", params["scale"], f"unknown scale (one of {', '.join(SCALES)})")
    if not isinstance(params["model"], str) or not params["model"]:
        raise ParamError("model", params["model"], "must be a preset name or a checkpoint path/id")
    methods = params["methods"]
    if not isinstance(methods, list) or not methods:
        raise ParamError("methods", methods, "must be a non-empty list")
    for m in methods:
        known_method("methods", m)
    if len(set(methods)) != len(methods):
        raise ParamError("methods", methods, "must not repeat")
    known_method("method", params["method"])
    if params["method"] not in methods:
        raise ParamError("method", params["method"], "must be one of `methods`")
    _validate_data(params)
    _validate_training(params)
    for m in methods:
        if not isinstance(_get(params, f"unlearn.{m}"), dict):
            raise ParamError(f"unlearn.{m}", _get(params, f"unlearn.{m}"), "must be a mapping")
    per_scale("unlearn.save_every", _get(params, "unlearn.save_every"), lambda k, v: integer(k, v, lo=1))
    integer("unlearn.batch_size", _get(params, "unlearn.batch_size"), lo=1)
    for bench in ("fiu", "umu"):
        r = _get(params, f"unlearn.{bench}_ratio")
        if r not in _get(params, f"oracle.{bench}_ratios"):
            raise ParamError(f"unlearn.{bench}_ratio", r, f"must be one of oracle.{bench}_ratios (its oracle)")
    validate_analysis(params)
    validate_runtime(params)
    if "crossarch" in params:
        validate_crossarch(params["crossarch"])


def known_method(key: str, name: Any) -> str:
    """`name` is one of `method_names()`."""
    known = method_names()
    if name not in known:
        raise ParamError(key, name, f"unknown method (one of {', '.join(known)})")
    return name


def validate_analysis(params: dict) -> None:
    """The `analysis` section: tie rule, reliability feeding the weights, strict, sanity bounds."""
    ties = _get(params, "analysis.ties")
    if ties not in TIES:
        raise ParamError("analysis.ties", ties, f"unknown tie rule (one of {', '.join(TIES)})")
    rel = _get(params, "analysis.reliability")
    if rel not in RELIABILITY:
        raise ParamError("analysis.reliability", rel, f"unknown choice (one of {', '.join(RELIABILITY)})")
    if not isinstance(_get(params, "analysis.strict"), bool):
        raise ParamError("analysis.strict", _get(params, "analysis.strict"), "must be true or false")
    for key in ("finetuned_fa_min", "holdout_max", "oracle_fa_margin", "min_forget_drop"):
        unit(f"analysis.sanity.{key}", _get(params, f"analysis.sanity.{key}"))
    mia = _get(params, "analysis.sanity.oracle_mia")
    if not isinstance(mia, list) or len(mia) != 2:
        raise ParamError("analysis.sanity.oracle_mia", mia, "must be a [low, high] pair")
    if unit("analysis.sanity.oracle_mia[0]", mia[0]) > unit("analysis.sanity.oracle_mia[1]", mia[1]):
        raise ParamError("analysis.sanity.oracle_mia", mia, "low must not exceed high")
    neglect = _get(params, "analysis.sanity.neglect")
    if not isinstance(neglect, list):
        raise ParamError("analysis.sanity.neglect", neglect, "must be a list of methods")
    for m in neglect:
        known_method("analysis.sanity.neglect", m)


def _leaves(node: Any, prefix: str) -> dict[str, Any]:
    """{dotted key: value} of every non-mapping value under `node`."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    return {k: v for key, sub in node.items() for k, v in _leaves(sub, f"{prefix}.{key}").items()}


def validate_runtime(params: dict) -> None:
    """The `runtime` section holds exactly the keys of RUNTIME (integers >= 0, 0 = automatic) and
    RUNTIME_FLAGS (true / false); a knob still in its old place is named with where it went."""
    for key in RUNTIME:
        try:
            old = _get(params, key)
        except ParamError:
            continue
        raise ParamError(key, old, f"moved to runtime.{key} (it cannot change results, so no stage lists it)")
    if not isinstance(params["runtime"], dict):
        raise ParamError("runtime", params["runtime"], "must be a mapping")
    known = RUNTIME + RUNTIME_FLAGS
    for leaf, value in _leaves(params["runtime"], "runtime").items():
        if leaf.removeprefix("runtime.") not in known:
            raise ParamError(leaf, value, f"unknown runtime knob (known: {', '.join(known)})")
    for key in RUNTIME:
        integer(f"runtime.{key}", _get(params, f"runtime.{key}"), lo=0)
    for key in RUNTIME_FLAGS:
        _get(params, f"runtime.{key}")   # present in params.yaml
        runtime_flag(params, key)


def runtime(params: dict, key: str) -> int:
    """Runtime knob `runtime.<key>` (one of RUNTIME): how a stage spreads its jobs, never what they
    compute."""
    if key not in RUNTIME:
        raise ParamError(f"runtime.{key}", None, f"unknown runtime knob (known: {', '.join(RUNTIME)})")
    return integer(f"runtime.{key}", _get(params, f"runtime.{key}"), lo=0)


def runtime_flag(params: dict, key: str) -> bool:
    """Runtime switch `runtime.<key>` (one of RUNTIME_FLAGS): true or false (false where a partial
    params dict, as library callers and tests pass, has no `runtime` section)."""
    if key not in RUNTIME_FLAGS:
        raise ParamError(f"runtime.{key}", None, f"unknown runtime switch (known: {', '.join(RUNTIME_FLAGS)})")
    value = (params.get("runtime") or {}).get(key, False)
    if not isinstance(value, bool):
        raise ParamError(f"runtime.{key}", value, "must be true or false")
    return value


def validate_crossarch(cfg: Any) -> dict:
    """The optional `crossarch` section (stage crossarch: a second VLM family)."""
    keys = ("model", "methods", "variant", "profiles", "public_profiles_per_domain")
    if not isinstance(cfg, dict) or sorted(cfg) != sorted(keys):
        raise ParamError("crossarch", cfg, f"must be a mapping with keys {list(keys)}")
    if not isinstance(cfg["model"], str) or not cfg["model"]:
        raise ParamError("crossarch.model", cfg["model"], "must be a preset name or a checkpoint path/id")
    methods = cfg["methods"]
    if not isinstance(methods, list) or len(methods) < 2 or len(set(methods)) != len(methods):
        raise ParamError("crossarch.methods", methods, "must list at least two distinct methods")
    for m in methods:
        known_method("crossarch.methods", m)
    if cfg["variant"] not in ("icu", "fiu", "umu"):
        raise ParamError("crossarch.variant", cfg["variant"], "must be one of icu, fiu, umu")
    per_scale("crossarch.profiles", cfg["profiles"], lambda k, v: integer(k, v, 2, allow_none=True))
    per_scale("crossarch.public_profiles_per_domain", cfg["public_profiles_per_domain"],
              lambda k, v: integer(k, v, 1, allow_none=True))
    return cfg


def _validate_data(params: dict) -> None:
    data = params["data"]
    if not isinstance(data, dict):
        raise ParamError("data", data, "must be a mapping")
    source = _get(params, "data.source")
    if source not in DATA_SOURCES:
        raise ParamError("data.source", data["source"], f"unknown source (one of {', '.join(DATA_SOURCES)})")
    source_dir = data.get("source_dir", "")
    if source_dir is not None and not isinstance(source_dir, str):
        raise ParamError("data.source_dir", source_dir,
                         "must be a directory path (a string; '' for the generated source)")
    if source != "generated" and not (source_dir or "").strip():
        raise ParamError("data.source_dir", source_dir,
                         f"data.source={source} needs the path of a local copy of the benchmark")
    if "source_holdout" in data:
        ratio("data.source_holdout", data["source_holdout"])
    size = integer("data.image_size", _get(params, "data.image_size"), lo=64)
    if size % 8:
        raise ParamError("data.image_size", size, "must be a multiple of 8")
    from mmunlearn.data.schema import QA_PER_PROFILE

    qpp = _get(params, "data.qa_per_profile")
    if qpp != QA_PER_PROFILE:
        raise ParamError("data.qa_per_profile", qpp, f"the QA design asks exactly {QA_PER_PROFILE} per profile")
    scales = _get(params, "data.scales")
    for scale in SCALES:
        if not isinstance(scales, dict) or scale not in scales:
            raise ParamError(f"data.scales.{scale}", None, "missing")
        pre = f"data.scales.{scale}"
        sc = scales[scale]
        for k in ("profiles_per_domain", "forget_tasks", "profiles_per_task", "holdout"):
            integer(f"{pre}.{k}", _get(params, f"{pre}.{k}"), lo=1)
        n = 2 * sc["profiles_per_domain"]
        forget = sc["forget_tasks"] * sc["profiles_per_task"]
        if forget + sc["holdout"] >= n:
            raise ParamError(
                f"{pre}.forget_tasks",
                sc["forget_tasks"],
                f"{sc['forget_tasks']} tasks x {sc['profiles_per_task']} profiles + {sc['holdout']} holdout "
                f"leave no retain profile among {n} profiles",
            )
    for key in ("data.fiu_ratios", "data.umu_ratios"):
        ratios = _get(params, key)
        if not isinstance(ratios, list) or not ratios:
            raise ParamError(key, ratios, "must be a non-empty list of ratios")
        for i, r in enumerate(ratios):
            ratio(f"{key}[{i}]", r)
        if len(set(ratios)) != len(ratios):
            raise ParamError(key, ratios, "must not repeat")


def _validate_training(params: dict) -> None:
    per_scale("base.public_profiles_per_domain", _get(params, "base.public_profiles_per_domain"),
               lambda k, v: integer(k, v, lo=4))
    for section in ("base", "finetune"):
        per_scale(f"{section}.epochs", _get(params, f"{section}.epochs"), positive)
        per_scale(f"{section}.lr", _get(params, f"{section}.lr"), positive)
        integer(f"{section}.batch_size", _get(params, f"{section}.batch_size"), lo=1)
    integer("finetune.grad_accum", _get(params, "finetune.grad_accum"), lo=1)
    dtype = _get(params, "base.dtype")
    if dtype not in DTYPES:
        raise ParamError("base.dtype", dtype, f"unknown dtype (one of {', '.join(DTYPES)})")
    if params["model"] in TINY_PRESETS and dtype != "float32":
        raise ParamError("base.dtype", dtype, f"model={params['model']} is a tiny preset: it trains and runs in float32")
    lora = _get(params, "finetune.lora")
    per_scale("finetune.lora.r", _get(params, "finetune.lora.r"), lambda k, v: integer(k, v, lo=1))
    per_scale("finetune.lora.alpha", lora.get("alpha"), positive)
    dropout = _get(params, "finetune.lora.dropout")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ParamError("finetune.lora.dropout", dropout, "must be in [0, 1)")
    targets = _get(params, "finetune.lora.target_modules")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise ParamError("finetune.lora.target_modules", targets, "must be a non-empty list of module names")
    for bench in ("fiu", "umu"):
        key = f"oracle.{bench}_ratios"
        ratios = _get(params, key)
        if not isinstance(ratios, list):
            raise ParamError(key, ratios, "must be a list")
        for i, r in enumerate(ratios):
            if r not in _get(params, f"data.{bench}_ratios"):
                raise ParamError(f"{key}[{i}]", r, f"not one of data.{bench}_ratios")
    stages = _get(params, "oracle.stages")
    if not isinstance(stages, list):
        raise ParamError("oracle.stages", stages, "must be a list of task numbers or 'last'")
    n_tasks = data_scale(params)["forget_tasks"]
    for i, st in enumerate(stages):
        if st != "last":
            integer(f"oracle.stages[{i}]", st, lo=1)
            if st > n_tasks:
                raise ParamError(f"oracle.stages[{i}]", st, f"only {n_tasks} forget tasks at scale {params['scale']}")
    integer("metrics.batch_size", _get(params, "metrics.batch_size"), lo=1)
    ratio("metrics.min_k", _get(params, "metrics.min_k"))
    integer("metrics.mia_folds", _get(params, "metrics.mia_folds"), lo=2)
    integer("metrics.mia_draws", _get(params, "metrics.mia_draws"), lo=1)
    integer("metrics.relearn_steps", _get(params, "metrics.relearn_steps"), lo=1)
    ratio("metrics.relearn_fraction", _get(params, "metrics.relearn_fraction"))
    ratio("metrics.kr_min_gap", _get(params, "metrics.kr_min_gap"))
    integer("metrics.continual_retain_rows", _get(params, "metrics.continual_retain_rows"), lo=0)
    per_scale("metrics.probe_rows", _get(params, "metrics.probe_rows"), lambda k, v: integer(k, v, lo=0))
    per_scale("metrics.eval_retain_rows", _get(params, "metrics.eval_retain_rows"), lambda k, v: integer(k, v, lo=0))
    integer("metrics.continual_task_rows", _get(params, "metrics.continual_task_rows"), lo=0)
    per_scale("metrics.continual_every", _get(params, "metrics.continual_every"), lambda k, v: integer(k, v, lo=1))
    integer("analysis.stability_draws", _get(params, "analysis.stability_draws"), lo=1)
