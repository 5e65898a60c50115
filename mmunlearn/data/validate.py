"""Stage `validate`: great-expectations 1.x (ephemeral context) over the assembled dataset.

Checks that are not plain column properties (split leakage, task disjointness, options, masks)
are computed as small derived tables first, then asserted with ordinary GX expectations, so
every failure is reported the GX way: expectation, column, offending ids.

Structural checks (schema, non-null, unique ids, value sets, options, leakage, disjoint tasks,
readable images) apply to every `data.source`. Checks that only hold for generated documents
apply only to `data.source == "generated"`: counts equal to the scale preset (profiles, QA, images,
task sizes, split sizes, 16 QA per profile), every `vqa_masked` image really hiding its field with
the identity cue intact, the per-domain image variants, every document field filled and unique
names. A converted benchmark instead must give every profile at least one image and one question,
number its forget tasks 1..N (N <= the preset's forget_tasks) and fill the name and maskable
fields (the slots its questions are filed under, see mmunlearn.data.sources).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mmunlearn.data.qa import QA_COLUMNS
from mmunlearn.data.schema import (ALL, DOMAINS, FIELDS, FORMS, FULL, MASKABLE, N_OPTIONS,
                                   QA_PER_PROFILE, SPLITS, VIEWS, Layout, image_name,
                                   images_per_profile)
from mmunlearn.data.splits import static_split_name
from mmunlearn.params import data_scale

HIDDEN_MIN = 0.99  # share of a masked field's box that must be black in its vqa_masked image


@dataclass
class Check:
    """One named expectation on one table; `id_column` names the offending rows."""

    name: str
    table: str
    expectation: object
    id_column: str


@dataclass
class Report:
    success: bool
    checks: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if not c["success"]]


def _mask_table(profiles: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    """Per masked image variant: share of its masked fields' boxes that is hidden (black in the
    variant, not black in the full document) and whether the identity cue is untouched."""
    rows = []
    for pid, domain, names in profiles[["profile_id", "domain", "images"]].itertuples(index=False):
        if domain not in MASKABLE:
            continue
        full = _load(data_dir / image_name(pid, FULL))
        for variant in [*MASKABLE[domain], ALL]:
            name = image_name(pid, variant)
            img = _load(data_dir / name)
            hidden, cue_intact = 0.0, False
            if full is not None and img is not None and img.shape == full.shape:
                lay = Layout(img.shape[1], domain)
                fracs = []
                for fld in (MASKABLE[domain] if variant == ALL else [variant]):
                    x0, y0, x1, y1 = lay.field_box(fld)
                    black_m = (img[y0:y1, x0:x1] == 0).all(axis=-1)
                    black_f = (full[y0:y1, x0:x1] == 0).all(axis=-1)
                    fracs.append(float((black_m & ~black_f).sum() / max(1, (~black_f).sum())))
                hidden = min(fracs)
                cx0, cy0, cx1, cy1 = lay.cue
                cue_intact = bool((img[cy0:cy1, cx0:cx1] == full[cy0:cy1, cx0:cx1]).all())
            rows.append({"image": name, "profile_id": pid, "hidden_fraction": hidden, "cue_intact": cue_intact})
    return pd.DataFrame(rows, columns=["image", "profile_id", "hidden_fraction", "cue_intact"])


def _load(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (FileNotFoundError, OSError):
        return None


def _image_table(profiles: pd.DataFrame, data_dir: Path, size: int) -> pd.DataFrame:
    rows = []
    for pid, names in profiles[["profile_id", "images"]].itertuples(index=False):
        for name in names:
            path = data_dir / name
            ok = False
            if path.is_file():
                try:
                    with Image.open(path) as im:
                        ok = im.format == "PNG" and im.size == (size, size)
                except OSError:
                    ok = False
            rows.append({"image": name, "profile_id": pid, "readable_png": ok})
    return pd.DataFrame(rows, columns=["image", "profile_id", "readable_png"])


def _membership_table(qa: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """Per profile: the splits and tasks its QA rows claim, against its profile-level split."""
    by = qa.groupby("profile_id", sort=True)
    splits = by["split"].agg(lambda s: frozenset(s))
    tasks = qa[qa.split == "forget"].groupby("profile_id")["task"].nunique()
    prof = profiles.drop_duplicates("profile_id").set_index("profile_id")
    out = pd.DataFrame({"profile_id": splits.index})
    claimed = [s | ({prof.loc[p, "split"]} if p in prof.index else set()) for p, s in zip(splits.index, splits)]
    out["forget_and_kept"] = [("forget" in c) and bool(c & {"retain", "holdout"}) for c in claimed]
    out["n_splits"] = [len(s) for s in splits]
    out["n_forget_tasks"] = [int(tasks.get(p, 0)) for p in splits.index]
    out["matches_profile_split"] = [
        p in prof.index and s == {prof.loc[p, "split"]} for p, s in zip(splits.index, splits)
    ]
    return out


def _task_table(profiles: pd.DataFrame) -> pd.DataFrame:
    forget = profiles[profiles.split == "forget"]
    return forget.groupby("task", sort=True).agg(n_profiles=("profile_id", "size")).reset_index()


def _split_size_table(profiles: pd.DataFrame, sc: dict, params: dict, counts: bool = True) -> pd.DataFrame:
    """Profiles per split against the preset (`counts`, generated only) and per static split
    against its ratio of the trained profiles."""
    trained = int((profiles.split != "holdout").sum())
    rows = [{"split": s, "n_profiles": int((profiles.split == s).sum()),
             "expected": {"forget": sc["forget_profiles"], "retain": sc["retain_profiles"],
                          "holdout": sc["holdout"]}[s]} for s in SPLITS] if counts else []
    for bench in ("fiu", "umu"):
        for r in params["data"][f"{bench}_ratios"]:
            col = static_split_name(bench, r)
            rows.append({"split": col, "n_profiles": int(profiles[col].sum()) if col in profiles else -1,
                         "expected": max(1, int(round(r * trained)))})
    return pd.DataFrame(rows, columns=["split", "n_profiles", "expected"])


def _options_table(qa: pd.DataFrame) -> pd.DataFrame:
    opts = qa["options"].map(lambda o: [] if o is None else list(o))
    out = pd.DataFrame({"qa_id": qa.qa_id, "form": qa.form})
    out["n_options"] = opts.map(len)
    out["n_distinct_options"] = opts.map(lambda o: len(set(o)))
    out["answer_in_options"] = [a in o for a, o in zip(qa.answer, opts)]
    return out


def validation_tables(params: dict, profiles: pd.DataFrame, qa: pd.DataFrame, data_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables the expectations run on: profiles and QA with derived columns, and one table per
    cross-row property (membership, tasks, options, masks, images, split sizes)."""
    sc = data_scale(params)
    generated = params["data"].get("source", "generated") == "generated"
    prof = profiles.drop(columns=["images"]).assign(n_images=profiles["images"].map(len))
    if not generated:
        n_qa = qa.groupby("profile_id").size()
        prof = prof.assign(n_qa=[int(n_qa.get(p, 0)) for p in profiles.profile_id])
    return {
        "profiles": prof,
        "qa": qa.assign(answer_length=qa.answer.fillna("").str.strip().str.len(),
                        expected_image=[image_name(p, FULL if v == "vqa_full" else f) if v != "text" else None
                                        for p, v, f in zip(qa.profile_id, qa.view, qa.field)]),
        "membership": _membership_table(qa, profiles),
        "tasks": _task_table(profiles),
        "options": _options_table(qa),
        **({"masks": _mask_table(profiles, data_dir)} if generated else {}),
        "images": _image_table(profiles, data_dir, int(params["data"]["image_size"])),
        "split_sizes": _split_size_table(profiles, sc, params, counts=generated),
    }


def build_checks(params: dict, profiles: pd.DataFrame, qa: pd.DataFrame, data_dir: Path):
    """(tables, checks): `validation_tables` and the expectations on them (`expectation_spec`,
    plus the structural replacements of the count checks for a converted benchmark)."""
    tables = validation_tables(params, profiles, qa, data_dir)
    checks = expectation_spec(params)
    if params["data"].get("source", "generated") != "generated":
        checks = [c for c in checks if c.name not in GENERATED_ONLY] + benchmark_checks(profiles)
    return tables, checks


def benchmark_checks(profiles: pd.DataFrame) -> list:
    """What a converted benchmark must satisfy instead of the scale presets' counts."""
    import great_expectations as gx

    E, pc = gx.expectations, "profile_id"
    n_tasks = int(profiles.task.max()) if len(profiles) else 0
    return [
        Check("forget_task_count", "tasks", E.ExpectTableRowCountToEqual(value=n_tasks), "task"),
        Check("forget_tasks_numbered_from_1", "tasks", E.ExpectColumnValuesToBeBetween(
            column="task", min_value=1, max_value=max(1, n_tasks)), "task"),
        Check("forget_task_size", "tasks", E.ExpectColumnValuesToBeBetween(column="n_profiles", min_value=1), "task"),
        Check("profile_has_image", "profiles", E.ExpectColumnValuesToBeBetween(column="n_images", min_value=1), pc),
        Check("profile_has_qa", "profiles", E.ExpectColumnValuesToBeBetween(column="n_qa", min_value=1), pc),
    ]


def expectation_spec(params: dict) -> list:  # declarative spec: exempt from the 80-line rule
    """Every expectation of the data contract (SPEC section 4), one `Check` each."""
    import great_expectations as gx

    from great_expectations.expectations.row_conditions import Column as C

    E = gx.expectations
    sc = data_scale(params)
    generated = params["data"].get("source", "generated") == "generated"
    n_profiles = sc["profiles"]
    n_images = sum(images_per_profile(d) for d in DOMAINS) * sc["profiles_per_domain"]
    pc = "profile_id"
    static = [static_split_name("fiu", r) for r in params["data"]["fiu_ratios"]] + \
             [static_split_name("umu", r) for r in params["data"]["umu_ratios"]]
    checks = [
        Check("qa_schema", "qa", E.ExpectTableColumnsToMatchSet(column_set=QA_COLUMNS + ["answer_length", "expected_image"], exact_match=True), "qa_id"),
        Check("profiles_schema", "profiles", E.ExpectTableColumnsToMatchSet(
            column_set=["profile_id", "domain", "cue", "split", "task", "n_images", *static,
                        *dict.fromkeys(FIELDS["medical"] + FIELDS["labor"]),
                        *([] if generated else ["n_qa"])], exact_match=True), pc),
        Check("profile_count", "profiles", E.ExpectTableRowCountToEqual(value=n_profiles), pc),
        Check("qa_count", "qa", E.ExpectTableRowCountToEqual(value=n_profiles * QA_PER_PROFILE), "qa_id"),
        Check("image_count", "images", E.ExpectTableRowCountToEqual(value=n_images), "image"),
        Check("forget_task_count", "tasks", E.ExpectTableRowCountToEqual(value=sc["forget_tasks"]), "task"),
        Check("forget_task_size", "tasks", E.ExpectColumnValuesToBeBetween(
            column="n_profiles", min_value=sc["profiles_per_task"], max_value=sc["profiles_per_task"]), "task"),
        Check("split_sizes", "split_sizes", E.ExpectColumnPairValuesToBeEqual(
            column_A="n_profiles", column_B="expected"), "split"),
        Check("profile_id_unique", "profiles", E.ExpectColumnValuesToBeUnique(column=pc), pc),
        Check("qa_id_unique", "qa", E.ExpectColumnValuesToBeUnique(column="qa_id"), "qa_id"),
        Check("cue_unique", "profiles", E.ExpectColumnValuesToBeUnique(column="cue"), pc),
        Check("name_unique", "profiles", E.ExpectColumnValuesToBeUnique(column="name"), pc),
        Check("domain_values", "profiles", E.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)), pc),
        Check("profile_split_values", "profiles", E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)), pc),
        Check("task_range", "profiles", E.ExpectColumnValuesToBeBetween(column="task", min_value=0, max_value=sc["forget_tasks"]), pc),
        Check("task_type", "profiles", E.ExpectColumnValuesToBeInTypeList(column="task", type_list=["int64", "int32"]), pc),
        Check("images_per_profile_medical", "profiles", E.ExpectColumnValuesToBeBetween(
            column="n_images", min_value=images_per_profile("medical"), max_value=images_per_profile("medical"),
            row_condition=(C("domain") == "medical")), pc),
        Check("images_per_profile_labor", "profiles", E.ExpectColumnValuesToBeBetween(
            column="n_images", min_value=images_per_profile("labor"), max_value=images_per_profile("labor"),
            row_condition=(C("domain") == "labor")), pc),
        Check("qa_domain_values", "qa", E.ExpectColumnValuesToBeInSet(column="domain", value_set=list(DOMAINS)), "qa_id"),
        Check("qa_view_values", "qa", E.ExpectColumnValuesToBeInSet(column="view", value_set=list(VIEWS)), "qa_id"),
        Check("qa_form_values", "qa", E.ExpectColumnValuesToBeInSet(column="form", value_set=list(FORMS)), "qa_id"),
        Check("qa_split_values", "qa", E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)), "qa_id"),
        Check("qa_field_values", "qa", E.ExpectColumnValuesToBeInSet(
            column="field", value_set=sorted(set(MASKABLE["medical"]) | set(MASKABLE["labor"]))), "qa_id"),
        Check("qa_answer_not_empty", "qa", E.ExpectColumnValuesToBeBetween(column="answer_length", min_value=1), "qa_id"),
        Check("qa_text_has_no_image", "qa", E.ExpectColumnValuesToBeNull(
            column="image", row_condition=(C("view") == "text")), "qa_id"),
        Check("qa_vqa_has_image", "qa", E.ExpectColumnValuesToNotBeNull(
            column="image", row_condition=(C("view") != "text")), "qa_id"),
        Check("forget_rows_have_task", "qa", E.ExpectColumnValuesToBeBetween(
            column="task", min_value=1, max_value=sc["forget_tasks"],
            row_condition=(C("split") == "forget")), "qa_id"),
        Check("kept_rows_have_no_task", "qa", E.ExpectColumnValuesToBeBetween(
            column="task", min_value=0, max_value=0, row_condition=(C("split") != "forget")), "qa_id"),
        Check("no_profile_in_forget_and_retain_or_holdout", "membership",
              E.ExpectColumnValuesToBeInSet(column="forget_and_kept", value_set=[False]), pc),
        Check("profile_in_one_split", "membership", E.ExpectColumnValuesToBeBetween(column="n_splits", min_value=1, max_value=1), pc),
        Check("forget_tasks_disjoint", "membership", E.ExpectColumnValuesToBeBetween(column="n_forget_tasks", min_value=0, max_value=1), pc),
        Check("qa_split_matches_profile_split", "membership",
              E.ExpectColumnValuesToBeInSet(column="matches_profile_split", value_set=[True]), pc),
        Check("classification_has_4_options", "options", E.ExpectColumnValuesToBeBetween(
            column="n_options", min_value=N_OPTIONS, max_value=N_OPTIONS,
            row_condition=(C("form") == "classification")), "qa_id"),
        Check("classification_options_distinct", "options", E.ExpectColumnValuesToBeBetween(
            column="n_distinct_options", min_value=N_OPTIONS, max_value=N_OPTIONS,
            row_condition=(C("form") == "classification")), "qa_id"),
        Check("classification_answer_in_options", "options", E.ExpectColumnValuesToBeInSet(
            column="answer_in_options", value_set=[True],
            row_condition=(C("form") == "classification")), "qa_id"),
        Check("open_forms_have_no_options", "options", E.ExpectColumnValuesToBeBetween(
            column="n_options", min_value=0, max_value=0,
            row_condition=(C("form") != "classification")), "qa_id"),
        Check("images_readable", "images", E.ExpectColumnValuesToBeInSet(column="readable_png", value_set=[True]), "image"),
        Check("qa_image_shows_its_view", "qa", E.ExpectColumnPairValuesToBeEqual(
            column_A="image", column_B="expected_image", row_condition=(C("view") != "text")), "qa_id"),
        Check("vqa_masked_field_hidden", "masks", E.ExpectColumnValuesToBeBetween(
            column="hidden_fraction", min_value=HIDDEN_MIN, max_value=1.0), "image"),
        Check("vqa_masked_cue_intact", "masks", E.ExpectColumnValuesToBeInSet(column="cue_intact", value_set=[True]), "image"),
    ]
    for d in DOMAINS:
        for f in FIELDS[d] if generated else MASKABLE[d]:
            checks.append(Check(f"{d}_{f}_not_null", "profiles", E.ExpectColumnValuesToNotBeNull(
                column=f, row_condition=(C("domain") == d)), pc))
    for col in ("qa_id", "profile_id", "domain", "field", "view", "form", "question", "answer", "pair_id", "split", "task"):
        checks.append(Check(f"qa_{col}_not_null", "qa", E.ExpectColumnValuesToNotBeNull(column=col), "qa_id"))
    for col in static:
        checks.append(Check(f"{col}_excludes_holdout", "profiles", E.ExpectColumnValuesToBeInSet(
            column=col, value_set=[False], row_condition=(C("split") == "holdout")), pc))
    return [c for c in checks if c is not None]


# Checks that only make sense for generated documents (counts of the scale presets, masked
# variants, rendered fields); a converted benchmark gets structural replacements instead.
GENERATED_ONLY = frozenset({
    "profile_count", "qa_count", "image_count", "forget_task_count", "forget_task_size",
    "images_per_profile_medical", "images_per_profile_labor", "name_unique",
    "vqa_masked_field_hidden", "vqa_masked_cue_intact",
})


PROFILE_REQUIRED = ("profile_id", "domain", "cue", "split", "task", "images")


def run_checks(params: dict, profiles: pd.DataFrame, qa: pd.DataFrame, data_dir: Path) -> Report:
    """Run every expectation; the report lists each with its offending ids (first 20)."""
    missing = [("qa", c) for c in QA_COLUMNS if c not in qa.columns] + \
              [("profiles", c) for c in PROFILE_REQUIRED if c not in profiles.columns]
    if missing:
        return Report(False, [{"name": f"{t}_schema", "table": t, "expectation": "expect_column_to_exist",
                               "column": c, "success": False, "unexpected_count": None,
                               "offending": []} for t, c in missing])
    tables, checks = build_checks(params, profiles, qa, data_dir)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("dataset")
    report = Report(True)
    for table, frame in tables.items():
        mine = [c for c in checks if c.table == table]
        if not mine:
            continue
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=table))
        for c in mine:
            suite.add_expectation(c.expectation)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        id_col = mine[0].id_column
        result = vd.run(batch_parameters={"dataframe": frame},
                        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_col]})
        for c, res in zip(mine, _in_order(mine, result.results)):
            offending = [str(row.get(c.id_column)) for row in res.result.get("unexpected_index_list") or []
                         if isinstance(row, dict)]
            entry = {
                "name": c.name,
                "table": table,
                "expectation": res.expectation_config.type,
                "column": res.expectation_config.kwargs.get("column")
                or res.expectation_config.kwargs.get("column_A"),
                "success": bool(res.success),
                "unexpected_count": res.result.get("unexpected_count"),
                "observed_value": _plain(res.result.get("observed_value")),
                "offending": sorted(set(offending))[:20],
            }
            if res.exception_info and res.exception_info.get("raised_exception"):
                entry["success"] = False
                entry["error"] = str(res.exception_info.get("exception_message")).splitlines()[0]
            report.checks.append(entry)
            report.success &= entry["success"]
    return report


def _in_order(checks: list[Check], results) -> list:
    """GX returns results in suite order; match them to checks by expectation id to be sure."""
    by_id = {r.expectation_config.id: r for r in results}
    return [by_id[c.expectation.id] for c in checks]


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def validate_dataset(params: dict, root: str | Path = ".") -> Report:
    root = Path(root)
    profiles = pd.read_parquet(root / "data" / "profiles.parquet")
    qa = pd.read_parquet(root / "data" / "qa.parquet")
    return run_checks(params, profiles, qa, root / "data")
