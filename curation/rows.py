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

import numpy as np
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
READ_ROWS = 131_072  # the most rows one read of a lazy scan spans (batches' texts, prompts and pairs)
SCORE_ROWS = 1_048_576  # scores read at a time
PAIR_COLUMNS = ("pair_id", "prompt_id", "chosen_id", "rejected_id", "margin", "score", "builder", "label_source",
                "confidence", "meta")  # what a published row copies from its pair (flipped where it is)
CARD_COLUMNS = ("margin", "score", "builder", "label_source", "confidence", "meta")  # of those, what the card reads


class Rows:
    """Columns of a table by row number: a frame in memory, or a lazy scan read a slice at a time.

    A gather reads slices of at most READ_ROWS rows around the rows it needs (none across a gap),
    so a table stored in the order its rows are used (pairs; a run's prompts and candidates, written
    in pair order) costs a batch's rows, not the table's. In any other order a gather reads more
    (at worst the column, a slice at a time): the same rows, in the same bounded memory."""

    def __init__(self, tables: Mapping[str, pl.DataFrame | pl.LazyFrame], name: str, columns: Sequence[str]) -> None:
        source = tables.get(name)
        self.scan = schema.conform_lazy(source, name).select(columns) if isinstance(source, pl.LazyFrame) else None
        self.frame = _frame(tables, name, list(columns)) if self.scan is None else None

    def gather(self, index: pl.Series, columns: Sequence[str]) -> pl.DataFrame:
        if self.frame is not None:
            return self.frame.select(pl.col(list(columns)).gather(index))
        scan = self.scan.select(list(columns))
        if index.len() == 0:
            return scan.clear().collect()
        order = None if index.is_sorted() else index.arg_sort()
        ordered = index if order is None else index.gather(order)
        values = ordered.to_numpy()
        parts, a = [], 0
        while a < len(values):
            b = int(np.searchsorted(values, values[a] + READ_ROWS, side="left"))
            lo, hi = int(values[a]), int(values[b - 1])
            parts.append(scan.slice(lo, hi - lo + 1).collect().select(pl.all().gather(ordered.slice(a, b - a) - lo)))
            a = b
        rows = pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]
        return rows if order is None else rows.select(pl.all().gather(order.arg_sort()))


@dataclass
class VersionRows:
    """A version's rows, planned once and produced in batches.

    `keys` holds one fixed-width row per published pair: its row numbers in the pairs, prompts and
    candidates (`__i`, `__p`, `__c`, `__r`), what its decisions say (`_flip`, weight, epsilon), its
    split (`__test`) and each scorer's values (`__s<k>c/r/p`, before any flip). A batch gathers the
    strings (ids, labels, prompt, texts) by row number and applies the flips, so writing 1M pairs
    holds a batch of them, never all. `counts` is known before the first batch.
    """

    keys: pl.DataFrame
    pairs: Rows
    prompts: Rows
    texts: Rows
    chars: pl.Series  # each candidate's text length (the card's, without the texts)
    scorers: list[str]
    counts: dict[str, int]

    @property
    def height(self) -> int:
        return self.keys.height

    def _flipped(self, part: pl.DataFrame, pair_columns: Sequence[str], prompt_columns: Sequence[str]) -> pl.DataFrame:
        """`part` of the keys with its pairs' and prompts' columns, each side's own score, the margin,
        and the flips applied (text indexes, every scorer's values, then `flip`)."""
        rows = pl.concat([part, self.pairs.gather(part["__i"], pair_columns),
                          self.prompts.gather(part["__p"], prompt_columns)], how="horizontal")
        own = {side: [pl.when(pl.col("score") == s).then(pl.col(f"__s{k}{side[0]}")) for k, s in enumerate(self.scorers)]
               for side in ("chosen", "rejected")}
        rows = rows.with_columns(
            (pl.coalesce(own[side]) if own[side] else pl.lit(None, dtype=pl.Float64)).alias(f"{side}_score") for side in own
        )
        rows = rows.with_columns(
            pl.when(pl.col("margin").is_null()).then(pl.col("chosen_score") - pl.col("rejected_score")).otherwise(pl.col("margin")).alias("margin")
        )
        f = pl.col("_flip")
        swap = [("__c", "__r")] + [(f"__s{k}c", f"__s{k}r") for k in range(len(self.scorers))]
        rows = rows.with_columns(
            *[e for a, b in swap for e in (pl.when(f).then(pl.col(b)).otherwise(pl.col(a)).alias(a),
                                           pl.when(f).then(pl.col(a)).otherwise(pl.col(b)).alias(b))],
            *[pl.when(f).then(1.0 - pl.col(f"__s{k}p")).otherwise(pl.col(f"__s{k}p")).alias(f"__s{k}p") for k in range(len(self.scorers))],
        )
        return flip(rows, "_flip").with_columns(pl.when(pl.col("__test")).then(pl.lit("test")).otherwise(pl.lit("train")).alias("split"))

    def _scores_json(self) -> pl.Expr:
        """The `scores` column from the per-scorer values: {"<scorer>": {chosen, rejected, pair}, ...}, scorers sorted."""
        entries = []
        for k, scorer in enumerate(self.scorers):
            sides = [pl.col(f"__s{k}{s[0]}").alias(s) for s in SCORE_SIDES]
            name = scorer.replace("\\", "\\\\").replace('"', '\\"')
            entries.append(pl.when(pl.any_horizontal(e.is_not_null() for e in sides))
                           .then(pl.concat_str([pl.lit(f'"{name}":'), pl.struct(*sides).struct.json_encode()])))
        if not entries:
            return pl.lit(None, dtype=pl.String)
        return (pl.when(pl.any_horizontal(e.is_not_null() for e in entries))
                .then(pl.concat_str([pl.lit("{"), pl.concat_str(entries, separator=",", ignore_nulls=True), pl.lit("}")])))

    def batch(self, start: int, length: int) -> pl.DataFrame:
        """Rows [start, start + length) as VERSION_ROWS."""
        rows = self._flipped(self.keys.slice(start, length), PAIR_COLUMNS, ("messages", "source"))
        return schema.conform(
            rows.with_columns(
                self._scores_json().alias("scores"),
                pl.col("messages").alias("prompt"),
                self.texts.gather(rows["__c"], ["text"]).to_series().alias("chosen"),
                self.texts.gather(rows["__r"], ["text"]).to_series().alias("rejected"),
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
        """Every column the card reads (split, labels, source, ties, margin, weights), with text
        lengths in place of the texts."""
        rows = self._flipped(self.keys, CARD_COLUMNS, ("source",))
        return rows.select("split", "label_source", "builder", "source", "meta", "confidence", "margin", "weight", "epsilon",
                           self.chars.gather(rows["__c"]).alias("chosen_chars"), self.chars.gather(rows["__r"]).alias("rejected_chars"))


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


ID_HASH_SEED = 20_241  # ids are joined on their 64-bit hashes (polars' hash: stable within a process)


def _hashed(ids: pl.Series) -> pl.Series:
    return ids.to_frame("k").select(pl.when(pl.col("k").is_not_null()).then(pl.col("k").hash(ID_HASH_SEED)))["k"]


def _index(ids: pl.Series, index: str) -> pl.DataFrame:
    """(`index`, the id's hash) of each id's first row: the lookup table of `_lookup`."""
    return _hashed(ids).rename("__h").to_frame().with_row_index(index).filter(pl.col("__h").is_first_distinct())


def _lookup(ids: pl.Series, index: pl.DataFrame, keys: pl.Series) -> pl.Series:
    """The row number in `keys` (indexed by `_index`) of each id's first row, null when absent.

    Joined on 64-bit hashes (a fraction of a join on the strings, in time and memory), then each
    found id is compared with the one it names: two ids sharing a hash (about n^2 / 2^65 likely) make
    it join the strings instead."""
    col = index.columns[0]
    found = _hashed(ids).rename("__h").to_frame().join(index, on="__h", how="left", maintain_order="left")[col]
    if (keys.gather(found) != ids).any():
        exact = keys.rename("k").to_frame().with_row_index(col).filter(pl.col("k").is_first_distinct())
        found = ids.rename("k").to_frame().join(exact, on="k", how="left", maintain_order="left")[col]
    return found


def _slices(tables: Mapping[str, pl.DataFrame | pl.LazyFrame], name: str, columns: Sequence[str], rows: int) -> Iterator[pl.DataFrame]:
    """`tables[name]`'s `columns`, `rows` rows at a time (of a lazy scan, one slice read at a time)."""
    df = tables.get(name)
    if isinstance(df, pl.LazyFrame):
        scan = schema.conform_lazy(df, name).select(columns)
        for start in range(0, scan.select(pl.len()).collect().item(), rows):
            yield scan.slice(start, rows).collect()
    else:
        frame = _frame(tables, name, columns)
        for start in range(0, frame.height, rows):
            yield frame.slice(start, rows)


def _scatter(into: dict[str, pl.Series], found: pl.DataFrame, index: str, n: int) -> None:
    """Each scorer's values in `found` put into its length-n column at `index` (null where none is): a
    later value of a target replaces an earlier one."""
    for scorer in found["scorer"].unique(maintain_order=True).to_list():
        last = found.filter(pl.col("scorer") == scorer).unique(index, keep="last", maintain_order=True)
        column = into[scorer] if scorer in into else pl.repeat(None, n, dtype=pl.Float64, eager=True)
        into[scorer] = column.scatter(last[index], last["value"])


def _score_columns(keys: pl.DataFrame, scores: Iterator[pl.DataFrame], cand_ids: pl.Series, cand: pl.DataFrame,
                   kept_ids: pl.Series) -> tuple[pl.DataFrame, list[str]]:
    """`keys` (with `__c`, `__r`) plus, per scorer, its chosen, rejected and pair values (`__s<k>c/r/p`),
    and the scorers (sorted).

    `scores`: the scores table in order, a slice at a time (a target scored twice by one scorer
    counts its last non-null value). A target is a candidate (`cand`: `_index` of `cand_ids`), else
    a kept pair (`kept_ids`: pairwise scorers score those). Each scorer's values are put into one
    column per candidate and one per kept pair as the slices come, then gathered by row number.
    """
    by_cand: dict[str, pl.Series] = {}
    by_pair: dict[str, pl.Series] = {}
    kept = None
    for point in scores:
        point = point.filter(pl.col("value").is_not_null())
        found = point.select("scorer", "value", _lookup(point["target_id"], cand, cand_ids))
        _scatter(by_cand, found.drop_nulls("__c"), "__c", cand_ids.len())
        rest = point.filter(found["__c"].is_null())
        if rest.height:
            kept = _index(kept_ids, "__k") if kept is None else kept
            _scatter(by_pair, rest.select("scorer", "value", _lookup(rest["target_id"], kept, kept_ids)).drop_nulls("__k"),
                     "__k", keys.height)
    scorers = sorted(set(by_cand) | set(by_pair))
    none = pl.repeat(None, keys.height, dtype=pl.Float64, eager=True)
    cols: dict[str, pl.Series] = {}
    for k, scorer in enumerate(scorers):
        cols[f"__s{k}c"] = by_cand[scorer].gather(keys["__c"]) if scorer in by_cand else none
        cols[f"__s{k}r"] = by_cand[scorer].gather(keys["__r"]) if scorer in by_cand else none
        cols[f"__s{k}p"] = by_pair.get(scorer, none)
    return keys.with_columns(**cols), scorers


def plan_version_rows(
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame], *, test_fraction: float = 0.0, seed: int = 0
) -> VersionRows:
    """Denormalise pairs + prompts + candidates + scores + decisions into VERSION_ROWS, batch-wise.

    An item is kept iff all its decisions keep it; flips are applied (xor) by `flip`; weight is
    the product of the decisions' weights; epsilon is the last non-null one. Tables may be lazy
    scans: each id column is read alone, looked up and dropped, so the plan holds row numbers.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise RowsError(f"test_fraction must be in [0, 1), got {test_fraction}")
    pair_ids = _frame(tables, "pairs", ["pair_id"])
    if pair_ids["pair_id"].n_unique() < pair_ids.height:
        dup = pair_ids.filter(pl.col("pair_id").is_duplicated())
        raise RowsError(f"pairs: {dup.height} rows repeat a pair_id (e.g. {dup['pair_id'][0]}); deduplicate first")
    decided = combine_decisions(pair_ids, _frame(tables, "decisions", ["target_id", "kept", "flip", "weight", "epsilon"]))
    counts = {"pairs_in": pair_ids.height, "dropped": int((~decided["_kept"]).sum())}
    del pair_ids
    decided = decided.with_row_index("__i").filter(pl.col("_kept"))
    kept_ids = decided["pair_id"]  # pairwise scorers' targets
    keys = decided.select("__i", "_flip", pl.col("_weight").alias("weight"), pl.col("_epsilon").alias("epsilon"))
    del decided
    counts["flipped"] = int(keys["_flip"].sum())

    def ids(column: str) -> pl.Series:  # the kept pairs' `column`, read alone
        return _frame(tables, "pairs", [column])[column].gather(keys["__i"])

    prompts = _frame(tables, "prompts", ["prompt_id", pl.col("messages").is_null().alias("absent")])
    # no texts here: a candidate is its id, whether it has a text and its length (batches read texts)
    candidates = _frame(tables, "candidates", ["candidate_id", pl.col("text").is_null().alias("absent"),
                                               pl.col("text").str.len_chars().alias("chars")])
    cand = _index(candidates["candidate_id"], "__c")
    for index, what, name, found in (("__p", "prompt_id", "prompts", prompts), ("__c", "chosen_id", "candidates", candidates),
                                     ("__r", "rejected_id", "candidates", candidates)):
        looked_up = (_lookup(ids(what), _index(prompts["prompt_id"], "__p"), prompts["prompt_id"]) if name == "prompts"
                     else _lookup(ids(what), cand, candidates["candidate_id"]))
        missing = found["absent"].gather(looked_up).fill_null(True)
        if missing.any():
            first = int(missing.arg_true()[0])
            raise RowsError(
                f"{int(missing.sum())} kept pairs have a {what} with no row (or no text) in `{name}` "
                f"(e.g. pair {kept_ids[first]}, {what} {ids(what)[first]}); pass the {name} table"
            )
        keys = keys.with_columns(looked_up.alias(index))

    scores = _slices(tables, "scores", ["target_id", "scorer", "value"], SCORE_ROWS)
    keys, scorers = _score_columns(keys, scores, candidates["candidate_id"], cand, kept_ids)
    chars = candidates["chars"]
    del cand, candidates, kept_ids

    if test_fraction > 0:
        used = keys["__p"].unique()
        test = pl.repeat(False, prompts.height, dtype=pl.Boolean, eager=True).scatter(
            used, held_out_prompts(prompts["prompt_id"].gather(used), test_fraction, seed))
        keys = keys.with_columns(test.gather(keys["__p"]).alias("__test"))
    else:
        keys = keys.with_columns(pl.lit(False).alias("__test"))
    del prompts
    test_rows = int(keys["__test"].sum())
    counts.update(rows=keys.height, train=keys.height - test_rows, test=test_rows)
    sides = flip(_frame(tables, "pairs", ["meta", "confidence"])[keys["__i"]].with_columns(keys["_flip"]), "_flip")
    counts["ties"] = int(tie_mask(sides).sum())
    del sides
    plan = VersionRows(keys, Rows(tables, "pairs", PAIR_COLUMNS), Rows(tables, "prompts", ("messages", "source")),
                       Rows(tables, "candidates", ("text",)), chars, scorers, counts)
    return plan


def version_rows(
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame], *, test_fraction: float = 0.0, seed: int = 0
) -> tuple[pl.DataFrame, dict[str, int]]:
    """All of a version's rows in one frame (see `plan_version_rows`), and its counts."""
    plan = plan_version_rows(tables, test_fraction=test_fraction, seed=seed)
    return plan.collect(), plan.counts
