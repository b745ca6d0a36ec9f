from curation.stats import Stats


def test_a_replayed_report_keeps_the_rows_and_counts_and_drops_the_work_done():
    """A Prefect cache hit hands back the computing run's report; replayed, it claims no calls or time."""
    done = Stats(stage="generate", rows_in=4, rows_out=16, shards=2, calls=16, cache_hits=3, tokens=90,
                 retries=1, seconds=12.5, errors=2, counts={"skipped": 1}, detail={"workers": ["w"]})
    again = done.replayed()
    assert (again.cached, again.shards_cached) == (True, 2)
    assert (again.calls, again.cache_hits, again.tokens, again.retries, again.seconds) == (0, 0, 0, 0, 0.0)
    assert (again.rows_in, again.rows_out, again.errors, again.counts) == (4, 16, 2, {"skipped": 1})
    assert (done.calls, done.cached) == (16, False)  # the stored report is not changed
