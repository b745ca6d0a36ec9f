"""Row rules in one place: the denormalised pair row (VERSION_ROWS), how decisions combine into
it (kept, flip, soft labels), the one flip rule, ties, and the chosen/rejected text join.

Selection, publishing, export, training and the scorers all read pairs through these rules, so
a flipped pair, a tie or a soft label means the same thing everywhere. No catalog, no storage:
frames in, frames out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

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
    looked_up = pairs.select("pair_id").join(dec, on="pair_id", how="left", maintain_order="left")  # ids only: a
    return pairs.with_columns(  # join of every column would copy them all
        looked_up["_kept"].fill_null(True), looked_up["_flip"].fill_null(False), looked_up["_weight"].fill_null(1.0),
        looked_up["_epsilon"],
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


def held_out_prompts(prompt_ids: pl.Series, test_fraction: float, seed: int) -> pl.Series:
    """Deterministic prompt-level split: a prompt and all its pairs land on one side (True: test).

    A prompt is a test prompt when the first 4 bytes of sha256("<seed>:<prompt_id>") fall under
    test_fraction * 2**32; DuckDB hashes the column (a Python loop took 0.6 s per 500k prompts).
    """
    import duckdb

    keys = prompt_ids.rename("k").to_frame().select(pl.concat_str(pl.lit(f"{seed}:"), "k").alias("k"))  # noqa: F841 - DuckDB reads it
    digest = duckdb.sql("SELECT sha256(k) AS h FROM keys").pl()["h"]
    return (digest.str.slice(0, 8).str.to_integer(base=16) < int(test_fraction * 2**32)).alias("test")


VERSION_BATCH_ROWS = 50_000  # rows per batch (25-70 MB of texts at 250-700 characters): bounds the write, not the data


@dataclass
class VersionRows:
    """A version's rows, planned once and produced in batches.

    `keys` holds every published column but the heavy ones (prompt, chosen, rejected), which
    batches gather by row index from `messages` and `texts`; a batch costs its own rows, so
    writing 1M pairs never holds them all. `counts` is known before the first batch.
    """

    keys: pl.DataFrame
    messages: pl.Series
    texts: "Texts"
    chars: pl.Series  # each candidate's text length (the card's, without the texts)
    counts: dict[str, int]
    scores_json: pl.Expr  # the `scores` column, made per batch from the keys' per-scorer values

    @property
    def height(self) -> int:
        return self.keys.height

    def batch(self, start: int, length: int) -> pl.DataFrame:
        """Rows [start, start + length) as VERSION_ROWS."""
        part = self.keys.slice(start, length)
        return schema.conform(
            part.with_columns(
                self.scores_json.alias("scores"),
                self.messages.gather(part["__p"]).alias("prompt"),
                self.texts.gather(part["__c"]).alias("chosen"),
                self.texts.gather(part["__r"]).alias("rejected"),
            ).select(schema.VERSION_ROWS.names),
            "version_rows",
        )

    def batches(self, rows: int | None = None) -> Iterator[pl.DataFrame]:
        rows = rows or VERSION_BATCH_ROWS
        for start in range(0, self.height, rows):
            yield self.batch(start, rows)

    def collect(self) -> pl.DataFrame:
        return self.batch(0, self.height) if self.height else schema.empty("version_rows")

    def stats_frame(self) -> pl.DataFrame:
        """Every column the card reads, with text lengths in place of the texts."""
        return self.keys.select(
            pl.exclude("^__.*$"),
            self.chars.gather(self.keys["__c"]).alias("chosen_chars"),
            self.chars.gather(self.keys["__r"]).alias("rejected_chars"),
        )


@dataclass
class Texts:
    """The candidates' texts by row number: a column in memory, or a lazy scan read a slice at a
    time. A batch reads the rows between the first and the last text it needs, so candidates
    stored in the order their pairs were built (as a run writes them) cost a batch's texts, not
    the table's; in any other order a batch reads more (at worst the whole column) to the same result."""

    column: pl.Series | None = None
    scan: pl.LazyFrame | None = None

    def gather(self, index: pl.Series) -> pl.Series:
        if self.column is not None or index.len() == 0:
            return (self.column if self.column is not None else pl.Series("text", [], pl.String)).gather(index)
        lo, hi = int(index.min()), int(index.max())
        part = self.scan.slice(lo, hi - lo + 1).collect()["text"]
        return part.gather(index - lo)


def _frame(tables: Mapping[str, pl.DataFrame | pl.LazyFrame], name: str, columns: Sequence[str | pl.Expr] | None = None) -> pl.DataFrame:
    """`tables[name]` (a frame or a lazy scan) conformed to its schema, only `columns` read."""
    df = tables.get(name)
    if df is None:
        df = schema.empty(name)
    if isinstance(df, pl.LazyFrame):  # streamed: only the selected columns are ever held
        df = schema.conform_lazy(df, name)
        return (df if columns is None else df.select(columns)).collect(engine="streaming")
    df = schema.conform(df, name)
    return df if columns is None else df.select(columns)


def _index(frame: pl.DataFrame, key: str, index: str) -> pl.DataFrame:
    """key -> the row number of its first row."""
    return frame.select(key).with_row_index(index).filter(pl.col(key).is_first_distinct())


def _lookup(ids: pl.Series, index: pl.DataFrame) -> pl.Series:
    """The row number (`_index`) of each id, null when absent; joins the ids alone, not their frame."""
    key, col = index.columns[1], index.columns[0]
    return ids.rename(key).to_frame().join(index, on=key, how="left", maintain_order="left")[col]


def _dense(n: int, index: pl.Series, values: pl.Series) -> pl.Series:
    """A length-n Float64 column: `values` at `index`, null elsewhere."""
    return pl.repeat(None, n, dtype=pl.Float64, eager=True).scatter(index, values)


def _score_columns(rows: pl.DataFrame, point: pl.DataFrame, cand: pl.DataFrame, n_cand: int) -> tuple[pl.DataFrame, list[pl.Expr]]:
    """`rows` (with `__c`, `__r`, `__i`) plus, per scorer, its chosen, rejected and pair values
    (`__s<k>c/r/p`), the `chosen_score` and `rejected_score` of the row's own scorer, and the
    expressions of each scorer's entry in the `scores` JSON (scorers sorted).

    `point`: non-null scores in table order; a target scored twice by one scorer counts its last
    value. Values are gathered by row index: one join for the candidates' scores, one for the
    pairs' (pairwise scorers), and repeats are found on integer indexes, not on id strings.
    """
    on_cand = point.join(cand, left_on="target_id", right_on="candidate_id", how="inner", maintain_order="left")
    on_pair = (point.join(rows.select("pair_id", "__i"), left_on="target_id", right_on="pair_id", how="inner",
                          maintain_order="left") if on_cand.height < point.height else point.clear().with_columns(__i=pl.lit(0, pl.UInt32)))
    cols: dict[str, pl.Series] = {}
    entries: list[pl.Expr] = []
    own: dict[str, list[pl.Expr]] = {"chosen": [], "rejected": []}
    for k, scorer in enumerate(sorted(set(on_cand["scorer"].unique()) | set(on_pair["scorer"].unique()))):
        c = on_cand.filter(pl.col("scorer") == scorer).unique("__c", keep="last", maintain_order=True)
        p = on_pair.filter(pl.col("scorer") == scorer).unique("__i", keep="last", maintain_order=True)
        by_cand = _dense(n_cand, c["__c"], c["value"])
        for side, index in (("chosen", "__c"), ("rejected", "__r")):
            col = f"__s{k}{side[0]}"
            cols[col] = by_cand.gather(rows[index])
            own[side].append(pl.when(pl.col("score") == scorer).then(pl.col(col)))
        cols[f"__s{k}p"] = _dense(rows.height, p["__i"], p["value"])
        sides = [pl.col(f"__s{k}{s[0]}").alias(s) for s in SCORE_SIDES]
        name = scorer.replace("\\", "\\\\").replace('"', '\\"')
        entries.append(pl.when(pl.any_horizontal(e.is_not_null() for e in sides))
                       .then(pl.concat_str([pl.lit(f'"{name}":'), pl.struct(*sides).struct.json_encode()])))
    rows = rows.with_columns(**cols)
    return rows.with_columns(
        (pl.coalesce(own[side]) if own[side] else pl.lit(None, dtype=pl.Float64)).alias(f"{side}_score") for side in own
    ), entries


def plan_version_rows(
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame], *, test_fraction: float = 0.0, seed: int = 0
) -> VersionRows:
    """Denormalise pairs + prompts + candidates + scores + decisions into VERSION_ROWS, batch-wise.

    An item is kept iff all its decisions keep it; flips are applied (xor) by `flip`; weight is
    the product of the decisions' weights; epsilon is the last non-null one. Tables may be lazy
    scans: only the columns the rows need are read.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise RowsError(f"test_fraction must be in [0, 1), got {test_fraction}")
    pairs = _frame(tables, "pairs")
    if pairs["pair_id"].n_unique() < pairs.height:
        dup = pairs.filter(pl.col("pair_id").is_duplicated())
        raise RowsError(f"pairs: {dup.height} rows repeat a pair_id (e.g. {dup['pair_id'][0]}); deduplicate first")
    rows = combine_decisions(pairs, _frame(tables, "decisions", ["target_id", "kept", "flip", "weight", "epsilon"]))
    counts = {"pairs_in": pairs.height, "dropped": int((~rows["_kept"]).sum())}
    del pairs
    rows = rows.filter(pl.col("_kept")).with_row_index("__i")
    counts["flipped"] = int(rows["_flip"].sum())

    prompts = _frame(tables, "prompts", ["prompt_id", "messages", "source"])
    # no texts here: a candidate is its id, whether it has a text and its length (batches read texts)
    candidates = _frame(tables, "candidates", ["candidate_id", pl.col("text").is_null().alias("no_text"),
                                               pl.col("text").str.len_chars().alias("chars")])
    cand = _index(candidates, "candidate_id", "__c")
    rows = rows.with_columns(_lookup(rows["prompt_id"], _index(prompts, "prompt_id", "__p")).alias("__p"),
                             _lookup(rows["chosen_id"], cand).alias("__c"), _lookup(rows["rejected_id"], cand).alias("__r"))
    messages, no_text = prompts["messages"], candidates["no_text"]
    for index, absent, what, name in (("__p", messages.is_null(), "prompt_id", "prompts"), ("__c", no_text, "chosen_id", "candidates"),
                                      ("__r", no_text, "rejected_id", "candidates")):
        missing = rows.filter(absent.gather(rows[index]).fill_null(True))
        if missing.height:
            raise RowsError(
                f"{missing.height} kept pairs have a {what} with no row (or no text) in `{name}` "
                f"(e.g. pair {missing['pair_id'][0]}, {what} {missing[what][0]}); pass the {name} table"
            )
    rows = rows.with_columns(prompts["source"].gather(rows["__p"]).alias("source"))

    point = _frame(tables, "scores", ["target_id", "scorer", "value"]).filter(pl.col("value").is_not_null())
    rows, entries = _score_columns(rows, point, cand, candidates.height)
    chars = candidates["chars"]
    del point, cand, candidates
    rows = rows.with_columns(
        pl.when(pl.col("margin").is_null()).then(pl.col("chosen_score") - pl.col("rejected_score")).otherwise(pl.col("margin")).alias("margin")
    )
    # a flip swaps every side: the text indexes and each scorer's values (its pair value p -> 1 - p)
    f = pl.col("_flip")
    swap = [("__c", "__r")] + [(c, c[:-1] + "r") for c in rows.columns if c.startswith("__s") and c.endswith("c")]
    rows = rows.with_columns(
        *[e for a, b in swap for e in (pl.when(f).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
                                       pl.when(f).then(pl.col(a)).otherwise(pl.col(b)).alias(b))],
        *[pl.when(f).then(1.0 - pl.col(c)).otherwise(pl.col(c)).alias(c) for c in rows.columns if c.startswith("__s") and c.endswith("p")],
    )
    rows = flip(rows, "_flip")
    scores_json = (pl.when(pl.any_horizontal(e.is_not_null() for e in entries))
                   .then(pl.concat_str([pl.lit("{"), pl.concat_str(entries, separator=",", ignore_nulls=True), pl.lit("}")]))
                   if entries else pl.lit(None, dtype=pl.String))

    if test_fraction > 0:
        used = rows["__p"].unique()
        test = pl.repeat(False, messages.len(), dtype=pl.Boolean, eager=True).scatter(
            used, held_out_prompts(prompts["prompt_id"].gather(used), test_fraction, seed))
        split = pl.when(test.gather(rows["__p"])).then(pl.lit("test")).otherwise(pl.lit("train"))
    else:
        split = pl.lit("train")
    rows = rows.with_columns(split.alias("split"), pl.col("_weight").alias("weight"), pl.col("_epsilon").alias("epsilon"))
    made = ("prompt", "chosen", "rejected", "scores")  # per batch
    keys = rows.select([c for c in schema.VERSION_ROWS.names if c not in made] + ["__p", "__c", "__r"]
                       + [c for c in rows.columns if c.startswith("__s")])
    counts["rows"] = keys.height
    counts["train"] = int((keys["split"] == "train").sum())
    counts["test"] = keys.height - counts["train"]
    counts["ties"] = int(tie_mask(keys).sum())
    del rows
    source = tables.get("candidates")
    texts = (Texts(scan=schema.conform_lazy(source, "candidates").select("text")) if isinstance(source, pl.LazyFrame)
             else Texts(column=_frame(tables, "candidates", ["text"])["text"]))
    return VersionRows(keys, messages, texts, chars, counts, scores_json)


def version_rows(
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame], *, test_fraction: float = 0.0, seed: int = 0
) -> tuple[pl.DataFrame, dict[str, int]]:
    """All of a version's rows in one frame (see `plan_version_rows`), and its counts."""
    plan = plan_version_rows(tables, test_fraction=test_fraction, seed=seed)
    return plan.collect(), plan.counts
