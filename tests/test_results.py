"""The README's results tables are the committed runs' own records: each table, as results/tables.py prints it from
results/<study>/*/metrics.json, appears verbatim in the README (an edited number, or a re-run not carried over to the
README, fails here)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from helpers import ROOT

STUDIES = ["compare_models", "optim_grid", "best", "best_more"]


def _tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "results" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("study", STUDIES)
def test_readme_table_is_the_committed_metrics(study: str) -> None:
    table = _tables().table(study)
    assert table.count("\n") >= 3
    assert table in (ROOT / "README.md").read_text()
    assert table in (ROOT / "results" / study / "README.md").read_text()


@pytest.mark.parametrize("study", STUDIES)
def test_committed_records_are_complete_and_relative(study: str) -> None:
    for path in (ROOT / "results" / study).glob("*/metrics.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "completed"
        assert len(record["val_acc"]) == len(record["epoch_seconds"]) == record["epochs"]
        assert not str(record["data"]["dir"]).startswith("/")  # paths relative to the repository
