"""Row rules in one place: the denormalised pair row (VERSION_ROWS), how decisions combine into
it (kept, flip, soft labels), the one flip rule, ties, and the chosen/rejected text join.

Selection, publishing, export, training and the scorers all read pairs through these rules, so
a flipped pair, a tie or a soft label means the same thing everywhere. No catalog, no storage:
frames in, frames out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

import polars as pl

from curation import schema

FLIPPED_META = '{"flipped": true}'
SCORE_SIDES = ("chosen", "rejected", "pair")


class RowsError(ValueError):
    """Tables that cannot be denormalised: the message names the table, the id and what is missing."""


def table_or_empty(tables: Mapping[str, pl.DataFrame], name: str) -> pl.DataFrame:
    """`tables[name]` conformed to its schema, or that schema's empty frame."""
    df = tables.get(name)
    return schema.empty(name) if df is None else schema.conform(df, name)


# ---------------------------------------------------------------- texts


def with_texts(pairs: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """`pairs` plus `chosen` and `rejected`: the texts of the candidates their ids name (left join,
    order kept; a candidate id listed twice counts once)."""
    texts = candidates.unique("candidate_id", keep="first", maintain_order=True).select("candidate_id", "text")
    return pairs.join(
        texts.rename({"candidate_id": "chosen_id", "text": "chosen"}), on="chosen_id", how="left", maintain_order="left"
    ).join(texts.rename({"candidate_id": "rejected_id", "text": "rejected"}), on="rejected_id", how="left",
           maintain_order="left")


# ---------------------------------------------------------------- ties, flips, soft labels


def tie_mask(rows: pl.DataFrame) -> pl.Series:
    """Pairs with no preference direction: meta tie=true, or confidence exactly 0.5."""
    tie = rows["meta"].str.json_path_match("$.tie").fill_null("false") == "true"
    conf = rows["confidence"].fill_null(-1.0) == 0.5
    return (tie | conf).alias("tie")


def _toggle_flipped(meta: pl.Expr) -> pl.Expr:
    """meta with `"flipped": true` added, or removed when it is there (so two flips undo each other)."""
    stripped = meta.str.strip_chars()
    return (
        pl.when(stripped == FLIPPED_META).then(pl.lit(None, dtype=pl.String))
        .when(stripped.str.starts_with('{"flipped": true, ')).then(pl.concat_str([pl.lit("{"), stripped.str.slice(18)]))
        .when(meta.is_null() | (stripped == "{}")).then(pl.lit(FLIPPED_META))
        .otherwise(pl.concat_str([pl.lit('{"flipped": true, '), stripped.str.slice(1)]))
    )


def flip(rows: pl.DataFrame, mask: pl.Expr | pl.Series | str) -> pl.DataFrame:
    """The one flip rule: where `mask` holds, chosen and rejected trade places.

    Ids, texts and per-side scores swap; the margin changes sign; the confidence and every
    pairwise scorer's value (P(chosen is better)) become 1 - p; meta gains (or, on a second
    flip, loses) `"flipped": true`. Pair ids stay: they name the item, and decisions refer to
    them. Columns a frame does not have are left alone, so pools and published rows share it.
    """
    m = pl.col(mask) if isinstance(mask, str) else pl.lit(mask) if isinstance(mask, pl.Series) else mask
    exprs: list[pl.Expr] = []
    for a, b in (("chosen_id", "rejected_id"), ("chosen", "rejected"), ("chosen_score", "rejected_score")):
        if a in rows.columns and b in rows.columns:
            exprs += [pl.when(m).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
                      pl.when(m).then(pl.col(a)).otherwise(pl.col(b)).alias(b)]
    if "margin" in rows.columns:
        exprs.append(pl.when(m).then(-pl.col("margin")).otherwise(pl.col("margin")).alias("margin"))
    if "confidence" in rows.columns:
        exprs.append(pl.when(m).then(1.0 - pl.col("confidence")).otherwise(pl.col("confidence")).alias("confidence"))
    if "meta" in rows.columns:
        exprs.append(pl.when(m).then(_toggle_flipped(pl.col("meta"))).otherwise(pl.col("meta")).alias("meta"))
    if not exprs and "scores" not in rows.columns:
        return rows
    marked = rows.with_columns(m.fill_null(False).alias("__flip"))
    if "scores" in rows.columns:
        marked = _flip_scores_json(marked)
    return marked.with_columns(exprs).drop("__flip") if exprs else marked.drop("__flip")


def apply_flips(pool: pl.DataFrame, decided: pl.DataFrame) -> pl.DataFrame:
    """The pool with `flip` applied where a decision (by target_id) says so."""
    flips = decided.filter(pl.col("flip").fill_null(False))["target_id"]
    return flip(pool, pl.col("pair_id").is_in(flips.implode()))


def combine_decisions(pairs: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """`pairs` plus what its decisions say, one column each: `_kept` (all steps keep it), `_flip`
    (an odd number of flips), `_weight` (the product of weights) and `_epsilon` (the last soft
    label given). Pairs without decisions are kept, unflipped, weight 1."""
    dec = (
        decisions.filter(pl.col("target_id").is_in(pairs["pair_id"].implode()))
        .group_by("target_id", maintain_order=True)
        .agg(
            pl.col("kept").fill_null(True).all().alias("_kept"),
            (pl.col("flip").fill_null(False).cast(pl.Int64).sum() % 2 == 1).alias("_flip"),
            pl.col("weight").fill_null(1.0).product().alias("_weight"),
            pl.col("epsilon").drop_nulls().last().alias("_epsilon"),
        )
        .rename({"target_id": "pair_id"})
    )
    return pairs.join(dec, on="pair_id", how="left", maintain_order="left").with_columns(
        pl.col("_kept").fill_null(True), pl.col("_flip").fill_null(False), pl.col("_weight").fill_null(1.0)
    )


# ---------------------------------------------------------------- scores


def _encode_scores(long: pl.DataFrame) -> pl.DataFrame:
    """(pair_id, scorer, chosen, rejected, pair) rows -> one JSON object per pair_id, scorers sorted."""
    if long.height == 0:
        return pl.DataFrame({"pair_id": [], "scores": []}, schema={"pair_id": pl.String, "scores": pl.String})
    key = pl.col("scorer").str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
    entry = pl.concat_str([pl.lit('"'), key, pl.lit('":'), pl.struct(*SCORE_SIDES).struct.json_encode()])
    return (
        long.sort("pair_id", "scorer")
        .group_by("pair_id")
        .agg(entry.alias("e"))
        .select("pair_id", pl.concat_str([pl.lit("{"), pl.col("e").list.join(","), pl.lit("}")]).alias("scores"))
    )


def scores_json(rows: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Per pair: {scorer: {"chosen": v, "rejected": v, "pair": v}} from pointwise and pairwise scores."""
    sc = scores.select("target_id", "scorer", "value")
    parts = []
    for side, key in (("chosen", "chosen_id"), ("rejected", "rejected_id"), ("pair", "pair_id")):
        parts.append(
            rows.select("pair_id", pl.col(key).alias("target_id"))
            .join(sc, on="target_id", how="inner")
            .select("pair_id", "scorer", pl.col("value").alias(side))
        )
    long = parts[0].join(parts[1], on=["pair_id", "scorer"], how="full", coalesce=True)
    long = long.join(parts[2], on=["pair_id", "scorer"], how="full", coalesce=True)
    return _encode_scores(long.select("pair_id", "scorer", *SCORE_SIDES))


def _flip_scores_json(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows marked `__flip`: each scorer's chosen and rejected values swap, its pair value p -> 1 - p."""
    flipped = rows.filter(pl.col("__flip") & pl.col("scores").is_not_null())
    if flipped.height == 0:
        return rows
    records = []
    for pair_id, text in flipped.select("pair_id", "scores").iter_rows():
        for scorer, entry in json.loads(text).items():
            pair = entry.get("pair")
            records.append({"pair_id": pair_id, "scorer": scorer, "chosen": entry.get("rejected"),
                            "rejected": entry.get("chosen"), "pair": None if pair is None else 1.0 - pair})
    long = pl.DataFrame(records, schema={"pair_id": pl.String, "scorer": pl.String, "chosen": pl.Float64,
                                         "rejected": pl.Float64, "pair": pl.Float64})
    encoded = _encode_scores(long).rename({"scores": "__scores"})
    return rows.join(encoded, on="pair_id", how="left", maintain_order="left").with_columns(
        pl.when(pl.col("__flip")).then(pl.coalesce("__scores", "scores")).otherwise(pl.col("scores")).alias("scores")
    ).drop("__scores")


# ---------------------------------------------------------------- the denormalised row


def split_of(prompt_ids: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic prompt-level split: a prompt and all its pairs land on one side."""
    cut = int(test_fraction * 2**32)
    out = {}
    for pid in prompt_ids:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:4], "big")
        out[pid] = "test" if h < cut else "train"
    return out


def version_rows(
    tables: Mapping[str, pl.DataFrame], *, test_fraction: float = 0.0, seed: int = 0
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Denormalise pairs + prompts + candidates + scores + decisions into VERSION_ROWS.

    An item is kept iff all its decisions keep it; flips are applied (xor) by `flip`; weight is
    the product of the decisions' weights; epsilon is the last non-null one.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise RowsError(f"test_fraction must be in [0, 1), got {test_fraction}")
    pairs = table_or_empty(tables, "pairs")
    prompts = table_or_empty(tables, "prompts")
    candidates = table_or_empty(tables, "candidates")
    scores = table_or_empty(tables, "scores")
    dup = pairs.filter(pl.col("pair_id").is_duplicated())
    if dup.height:
        raise RowsError(f"pairs: {dup.height} rows repeat a pair_id (e.g. {dup['pair_id'][0]}); deduplicate first")

    rows = combine_decisions(pairs, table_or_empty(tables, "decisions"))
    counts = {"pairs_in": pairs.height, "dropped": int((~rows["_kept"]).sum())}
    rows = rows.filter(pl.col("_kept"))
    counts["flipped"] = int(rows["_flip"].sum())

    prompt_cols = prompts.unique("prompt_id", keep="first").select("prompt_id", pl.col("messages").alias("prompt"), "source")
    rows = with_texts(rows.join(prompt_cols, on="prompt_id", how="left", maintain_order="left"), candidates)
    for col, what in (("prompt", "prompt_id"), ("chosen", "chosen_id"), ("rejected", "rejected_id")):
        missing = rows.filter(pl.col(col).is_null())
        if missing.height:
            name = "prompts" if col == "prompt" else "candidates"
            raise RowsError(
                f"{missing.height} kept pairs have a {what} with no row (or no text) in `{name}` "
                f"(e.g. pair {missing['pair_id'][0]}, {what} {missing[what][0]}); pass the {name} table"
            )

    point = scores.filter(pl.col("value").is_not_null()).unique(["target_id", "scorer"], keep="last")
    for side in ("chosen", "rejected"):
        rows = rows.join(
            point.select(
                pl.col("target_id").alias(f"{side}_id"), pl.col("scorer").alias("score"), pl.col("value").alias(f"{side}_score")
            ),
            on=[f"{side}_id", "score"],
            how="left",
            maintain_order="left",
        )
    rows = rows.with_columns(
        pl.when(pl.col("margin").is_null()).then(pl.col("chosen_score") - pl.col("rejected_score")).otherwise(pl.col("margin")).alias("margin")
    )
    rows = rows.join(scores_json(rows, point), on="pair_id", how="left", maintain_order="left")
    rows = flip(rows, "_flip")

    if test_fraction > 0:
        split_map = split_of(rows["prompt_id"].unique().to_list(), test_fraction, seed)
        rows = rows.with_columns(pl.col("prompt_id").replace_strict(split_map, return_dtype=pl.String).alias("split"))
    else:
        rows = rows.with_columns(pl.lit("train").alias("split"))
    rows = rows.with_columns(pl.col("_weight").alias("weight"), pl.col("_epsilon").alias("epsilon"))
    out = schema.conform(rows.select(schema.VERSION_ROWS.names), "version_rows")
    counts["rows"] = out.height
    counts["train"] = int((out["split"] == "train").sum())
    counts["test"] = out.height - counts["train"]
    counts["ties"] = int(tie_mask(out).sum())
    return out, counts
