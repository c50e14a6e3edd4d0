"""Multi-language merges (the paper's Table 5): one SFT model merged with the CT models of several
languages (`ties-mvf-uig-flan`), against the one-language merges and the baselines, per language.

Which models are multi-language merges comes from what the registry recorded for each build (the
models table: kind `merge`, two or more `langs`, the recipe's method and inputs), not from their
ids. A multi-language merge's one-language counterpart in a language is the merge of the same
method over a subset of its inputs with that one language (`ties-uig-flan`: sft-flan and ct-uig, of
`ties-mvf-uig-flan`'s sft-flan, ct-mvf and ct-uig). Pure pandas, no Streamlit.
"""

import dataclasses
import json
from dataclasses import dataclass

import pandas as pd

from leaderboard import tables
from tasks.languages import LANGUAGES

MULTI, SINGLE, DELTA = "multi-language (%)", "one-language (%)", "Δ (points)"


@dataclass(frozen=True)
class MultiMerge:
    model: str
    langs: tuple[str, ...]
    method: str | None
    singles: dict[str, str]  # language code -> its one-language counterpart (missing: none evaluated)


@dataclass(frozen=True)
class _Record:
    kind: str
    langs: tuple[str, ...]
    method: str | None
    inputs: frozenset[str]


def multi_language_merges(scores: pd.DataFrame, models: pd.DataFrame) -> list[MultiMerge]:
    """The merges in `scores` over two or more languages (sweep trials left out), by languages then id."""
    records = _records(scores, models)
    found = []
    for model, record in records.items():
        if record.kind != "merge" or len(record.langs) < 2 or tables.SWEEP_TRIAL_MARK in model:
            continue
        singles = {}
        for other, candidate in sorted(records.items()):
            if (candidate.kind == "merge" and len(candidate.langs) == 1 and candidate.langs[0] in record.langs
                    and candidate.method == record.method and candidate.inputs <= record.inputs
                    and tables.SWEEP_TRIAL_MARK not in other):
                singles.setdefault(candidate.langs[0], other)
        found.append(MultiMerge(model, record.langs, record.method, singles))
    return sorted(found, key=lambda m: (m.langs, tables.MERGE_METHOD_ORDER.index(m.method)
                                        if m.method in tables.MERGE_METHOD_ORDER else len(tables.MERGE_METHOD_ORDER), m.model))


def _records(scores: pd.DataFrame, models: pd.DataFrame) -> dict[str, _Record]:
    """Per model id in `scores`: what the models table recorded for the build whose results are shown."""
    by_hash = models.drop_duplicates("model_hash", keep="last").set_index("model_hash")
    records = {}
    for model, model_hash in scores.drop_duplicates("model")[["model", "model_hash"]].itertuples(index=False):
        if model_hash not in by_hash.index:
            continue
        row = by_hash.loc[model_hash]
        recipe = json.loads(row["recipe_json"]) if isinstance(row["recipe_json"], str) else {}
        inputs = frozenset(m.get("model") for m in recipe.get("models") or [] if isinstance(m, dict))
        langs = tuple(code for code in str(row["langs"] or "").split(",") if code)
        records[model] = _Record(row["kind"], langs, recipe.get("merge_method"), inputs)
    return records


def language_sets(found: list[MultiMerge]) -> list[tuple[str, ...]]:
    return list(dict.fromkeys(merge.langs for merge in found))


def multilang_table(scores: pd.DataFrame, kinds: pd.DataFrame, langs: tuple[str, ...], found: list[MultiMerge],
                    shown_kinds=None) -> tables.ScoreTable:
    """Table 5 for one set of languages: the recipe families' rows (base, sft, CT-X, CTSFT-X, the
    one-language merges, as in Table 3) and each multi-language merge over exactly these languages
    as a row of its own, over these languages' columns and their Average."""
    rows = scores[scores["lang"].isin(langs)]
    table_kinds = kinds.copy()
    multi = [merge.model for merge in found if merge.langs == langs and merge.model in table_kinds.index]
    table_kinds.loc[multi, "family"] = multi  # a row of its own, filling every language column
    table_kinds.loc[multi, "family_lang"] = None
    table = tables.family_table(rows, table_kinds, shown_kinds)
    split = table.title.rsplit(", ", 1)[-1]
    return dataclasses.replace(table, title=f"Multi-language merges over {language_names(langs)}: average score "
                                            f"per language (%), {split}", name=f"table5-{'-'.join(langs)}-{split.split()[0]}")


def comparison(scores: pd.DataFrame, merge: MultiMerge) -> pd.DataFrame:
    """Per language of the merge and their Average: the multi-language merge, its one-language
    counterpart, and the difference in points (missing where either is not evaluated)."""
    averages = tables.language_averages(scores[scores["lang"].isin(merge.langs)])
    rows = []
    for lang in merge.langs:
        multi = _cell(averages, merge.model, lang)
        single_model = merge.singles.get(lang)
        single = _cell(averages, single_model, lang) if single_model else float("nan")
        rows.append({"language": LANGUAGES[lang].name if lang in LANGUAGES else lang,
                     "one-language merge": single_model or "–", MULTI: multi, SINGLE: single, DELTA: multi - single})
    frame = pd.DataFrame(rows)
    numbers = frame[[MULTI, SINGLE, DELTA]].mean(skipna=False)
    average = {"language": tables.AVERAGE, "one-language merge": "", **numbers.to_dict()}
    return pd.concat([frame, pd.DataFrame([average])], ignore_index=True).set_index("language")


def _cell(averages: pd.DataFrame, model: str, lang: str) -> float:
    if model in averages.index and lang in averages.columns:
        return float(averages.at[model, lang])
    return float("nan")


def language_names(langs: tuple[str, ...]) -> str:
    return " + ".join(LANGUAGES[code].name if code in LANGUAGES else code for code in langs)
