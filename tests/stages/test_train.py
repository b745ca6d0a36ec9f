"""The train stage's summary: what TRL dropped or cut for max_length reaches the run's named counts."""

from __future__ import annotations

from types import SimpleNamespace

from curation.stages.stage import record_frame
from curation.stages.train import STAGE
from curation.stats import Stats


def test_summary_counts_pairs_dropped_and_cut_for_max_length(tmp_path):
    record = {"model": "m", "model_id": "id", "control_model": "c", "control_rows": 9,
              "metrics": {"dropped_over_max_length": 3.0, "truncated_to_max_length": 2.0},
              "control_metrics": {"dropped_over_max_length": 1.0, "truncated_to_max_length": 0.0}}
    path = tmp_path / "train.parquet"
    record_frame(record).write_parquet(path)
    report = Stats(stage="train")
    STAGE.summarize(None, {"train": SimpleNamespace(path=path)}, report)
    assert report.counts["dropped over max length"] == 3 and report.counts["truncated to max length"] == 2
    assert report.counts["control dropped over max length"] == 1
    assert "3 dropped over max length" in report.describe()
