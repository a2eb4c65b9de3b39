"""Published numbers are the committed runs' own records: each study's table, as results/tables.py prints it from
results/<study>/*/metrics.json, appears verbatim in its README (and the report's two studies on the front page), and
the front page's headline numbers are recomputed here (an edited number, or a re-run not carried over, fails)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT

STUDIES = [
    "compare_models",
    "optim_grid",
    "best",
    "best_more",
    "best_all",
    "best_elastic",
    "best_average",
    "best_bf16",
    "best_deotte",
    "best_amd",
    "best_zen4",
    "best_long",
    "best_wide",
    "kaggle_best",
    "kaggle_best_xeon",
    "kaggle_best_all",
    "best_zen3",
    "headline",
]
FRONT_PAGE = ("compare_models", "optim_grid")  # the report's two studies, whose tables the README shows
# Scored against an answer key (results/<study>/scores.csv), and whether the README also shows the split by source.
KAGGLE_STUDIES = [("kaggle_best", False), ("kaggle_best_xeon", False), ("kaggle_best_all", False)]
PAIRS = [
    ("best", "best_elastic"),
    ("best", "best_bf16"),
    ("best_bf16", "best_deotte"),
    ("best", "best_amd"),
    ("best_bf16", "best_zen4"),
    ("best_zen4", "best_long"),
    ("best_zen4", "best_wide"),
    ("best", "best_zen3"),
    ("best_zen4", "headline"),
]  # recipe (or machine) changes, compared seed by seed on validation
# Ensembles chosen on a validation split their members share (digits.ensemble --select), and the studies of their runs.
ENSEMBLE_STUDIES = [
    ("shared", ["shared_original", "shared_deotte"]),
    ("shared1", ["shared1_original", "shared1_deotte"]),
]


def _tables():
    spec = importlib.util.spec_from_file_location("tables", ROOT / "results" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("study", STUDIES)
def test_readme_table_is_the_committed_metrics(study: str) -> None:
    table = _tables().table(study)
    jobs = len(list((ROOT / "results" / study).glob("*/metrics.json")))
    assert jobs >= 1 and table.count("\n") >= 1 + jobs  # a header, its rule, a row per committed job
    assert table in (ROOT / "results" / study / "README.md").read_text()
    if study in FRONT_PAGE:
        assert table in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("study, in_readme", KAGGLE_STUDIES)
def test_readme_scores_by_source_are_the_committed_scores(study: str, in_readme: bool) -> None:
    table = _tables().by_source(study)
    assert table.count("\n") >= 3
    assert table in (ROOT / "results" / study / "README.md").read_text()
    if in_readme:
        assert table in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("base, other", PAIRS)
def test_readme_paired_table_is_the_committed_metrics(base: str, other: str) -> None:
    table = _tables().paired(base, other)
    assert table.count("\n") >= 3
    assert table in (ROOT / "results" / other / "README.md").read_text()


def _cell(row: str) -> str:
    """The value cell of a row of the README's headline table."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(f"| {row} |"))
    return line.split("|")[2]


def test_the_headline_numbers_are_recomputed_from_the_records() -> None:
    """The front page's single network and its ensemble come from one study (results/headline: five seeds, every
    member's softmax committed): the mean ± sd of its records, the ensemble and the members' mean recomputed from
    the softmax files, and the ensemble against its best member by McNemar's exact test (digits.compare)."""
    import statistics

    from digits import stats
    from digits.compare import compare, side

    tables = _tables()
    members = tables.jobs("headline")
    acc = [m["test_acc"] for _, m in members]
    assert len(acc) == 5 and {m["precision"] for _, m in members} == {"bf16-mixed"}
    single = f"**{100 * statistics.mean(acc):.3f}% ± {100 * statistics.stdev(acc):.3f}**"
    assert single in _cell("one network, MNIST test")
    kaggle = [m["test_acc"] for _, m in tables.scored("kaggle_best", tables.jobs("kaggle_best"))]
    assert len(kaggle) == 5 and all(a is not None for a in kaggle)
    want = f"**{100 * statistics.mean(kaggle):.3f}% ± {100 * statistics.stdev(kaggle):.3f}**"
    assert want in _cell("one network, Kaggle-format split")
    minutes = {s: statistics.median(m["train_seconds"] for _, m in tables.jobs(s)) / 60 for s in tables.MACHINES}
    time_cell = _cell("time, one network")
    assert f"**{minutes['best']:.0f} minutes**" in time_cell and "fp32" in time_cell
    assert (
        f"; {minutes['best_bf16']:.0f} in bf16" in time_cell and f"; {minutes['best_zen4']:.0f} on an AMD" in time_cell
    )
    # The ensemble: recomputed from the committed softmax, as is each member's accuracy.
    study = ROOT / "results" / "headline"
    record = json.loads((study / "ensemble.json").read_text())
    recomputed = tables.recompute(study / "ensemble.json")
    assert recomputed is not None and recomputed == record["test_acc"] and record["n_members"] == 5
    own = []
    for job, _ in members:
        with np.load(study / job / "softmax.npz") as z:
            own.append(float((z["test_probs"].argmax(1) == z["test_labels"]).mean()))
    assert own == pytest.approx(acc, abs=1e-6)  # the softmax files are the records' predictions (float32 there)
    best_job = members[int(np.argmax(own))][0]
    r = compare(side(study), side(study / best_job))
    assert r.a_correct / r.n == pytest.approx(recomputed)
    cell = _cell("several networks, MNIST test")
    assert f"**{100 * recomputed:.2f}%**" in cell and "ensemble of the same 5" in cell
    assert f"members {100 * statistics.mean(own):.3f}% ± {100 * statistics.stdev(own):.3f}" in cell
    verdict = "beyond noise" if r.beyond_noise else "within noise"
    assert f"{r.a_only} images right that it gets wrong, {r.b_only} the other way" in cell
    assert f"McNemar p = {r.p_value:.2f}, {verdict}" in cell and stats.ALPHA == 0.05
    index = (ROOT / "results" / "README.md").read_text()
    assert f"one network {single.strip('*')}, the five together {100 * recomputed:.2f}%" in index


def test_the_kaggle_format_study_is_recomputed_from_its_softmax_and_answer_key() -> None:
    """Each member's score and the ensemble's (scores.csv, graded from the submissions when the study ran) from the
    committed float16 softmax and answers.csv.gz, row for row by source; and the README's reading of them."""
    tables = _tables()
    study = ROOT / "results" / "kaggle_best"
    members = tables.jobs("kaggle_best")
    arrays = [np.load(study / job / "softmax.npz") for job, _ in members]
    labels = tables.test_labels(study, arrays[0])
    assert labels.shape == (28_000,) and "test_labels" not in arrays[0]
    rows = {Path(r["submission"]).parent.name: r for r in tables.score_rows("kaggle_best")}
    assert len(rows) == 6
    for (job, _), a in zip(members, arrays):
        assert int((a["test_probs"].argmax(1) == labels).sum()) == int(rows[job]["correct"]), job
    together = np.mean([a["test_probs"].astype(np.float32) for a in arrays], axis=0).argmax(1)
    assert int((together == labels).sum()) == int(rows["kaggle_best_ensemble"]["correct"])
    assert tables.kaggle_reading("kaggle_best") in " ".join((study / "README.md").read_text().split())
    index = (ROOT / "results" / "README.md").read_text()
    assert f"the five together {100 * (together == labels).mean():.2f}% (within noise" in index
    assert "McNemar p = 0.24, within noise" in tables.kaggle_reading("kaggle_best")


def test_the_results_index_holds_the_machines_table() -> None:
    table = _tables().machines()
    assert table.count("\n") == 1 + len(_tables().MACHINES)
    assert table in (ROOT / "results" / "README.md").read_text()


def test_every_study_is_in_the_results_index() -> None:
    index = (ROOT / "results" / "README.md").read_text()
    for study in STUDIES + [s for s, _ in ENSEMBLE_STUDIES]:
        assert f"[{study}]({study}/README.md)" in index


@pytest.mark.parametrize("study", STUDIES + [run for _, runs in ENSEMBLE_STUDIES for run in runs])
def test_committed_records_are_complete_and_relative(study: str) -> None:
    for path in (ROOT / "results" / study).glob("*/metrics.json"):
        record = json.loads(path.read_text())
        assert record["status"] == "completed"
        assert len(record["val_acc"]) == len(record["epoch_seconds"]) == record["epochs"]
        assert not str(record["data"]["dir"]).startswith("/")  # paths relative to the repository


def test_tta_check_shifts_fill_with_background_instead_of_wrapping() -> None:
    spec = importlib.util.spec_from_file_location("tta_check", ROOT / "results" / "tta_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.arange(1, 26, dtype=torch.uint8).reshape(1, 1, 5, 5)
    for dy, dx in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, -1)]:
        out = module.shifted(x, dy, dx)
        assert torch.equal(out, torch.roll(x, (dy, dx), dims=(2, 3)) * module.shifted(torch.ones_like(x), dy, dx))
        assert int((out == 0).sum()) == 25 - (5 - abs(dy)) * (5 - abs(dx))  # the uncovered border is background
        assert torch.equal(module.shifted(out, -dy, -dx)[..., 1:4, 1:4], x[..., 1:4, 1:4])  # and back again
    assert torch.equal(module.shifted(x, 0, 0), x)


def test_overlap_counts_the_errors_two_runs_share(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("overlap", ROOT / "results" / "overlap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from digits.runs import RunDir, RunRecord

    labels = np.zeros(10, dtype=np.int64)
    wrong_on = {"a/0_seed=0": [1, 2, 3, 4], "a/1_seed=1": [1, 2, 5, 6], "b/0_seed=0": [7, 8, 9, 1]}
    for name, wrong in wrong_on.items():
        run = RunDir(tmp_path / name)
        run.path.mkdir(parents=True)
        run.write_record(RunRecord(status="completed"))
        probs = np.eye(10, dtype=np.float32)[np.where(np.isin(np.arange(10), wrong), 3, 0)]
        run.write_predictions({"test_probs": probs, "test_labels": labels})
    assert module.errors(tmp_path / "a/1_seed=1") == {1, 2, 5, 6}
    module.main([str(tmp_path / "a"), str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "within a: 2 runs, 4.0 errors a run, 33.3% of errors shared by a pair" in out  # {1,2} of {1..6}
    assert "within b: 1 runs, 4.0 errors a run\n" in out  # a single run has no pair
    assert "across a / b: 14.3% of errors shared by a pair" in out  # {1} of 7, both pairs


def test_kaggle_split_hides_the_answers_and_scores_a_submission(tmp_path) -> None:
    import pandas as pd
    from helpers import make_folder

    spec = importlib.util.spec_from_file_location("kaggle_split", ROOT / "results" / "kaggle_split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    src = make_folder(tmp_path / "mnist", n_train=60, n_test=40, header="kaggle", test="labelled")
    out = tmp_path / "cut"
    module.make(src, out, n_train=70, seed=3)
    train, test = pd.read_csv(out / "train.csv"), pd.read_csv(out / "test.csv")
    key = pd.read_csv(tmp_path / "cut_answers.csv")
    assert len(train) == 70 and len(test) == 30 and "label" not in test.columns
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv"]  # the key is outside the folder
    pooled = pd.concat([pd.read_csv(src / "train.csv"), pd.read_csv(src / "test.csv")])
    rebuilt = pd.concat([train, pd.concat([key["Label"].rename("label"), test], axis=1)])
    assert sorted(map(tuple, rebuilt.to_numpy())) == sorted(map(tuple, pooled.to_numpy()))  # every image, once
    with pytest.raises(SystemExit, match="exists already"):
        module.make(src, out)

    submission = key[["ImageId", "Label"]].copy()
    submission.loc[:2, "Label"] = (submission.loc[:2, "Label"] + 1) % 10  # three wrong
    submission.sample(frac=1, random_state=0).to_csv(tmp_path / "submission.csv", index=False)  # any row order
    assert module.score(tmp_path / "cut_answers.csv", tmp_path / "submission.csv") == (27, 30)
    parts = module.score_by_source(tmp_path / "cut_answers.csv", tmp_path / "submission.csv")
    assert sum(c for c, _ in parts.values()) == 27 and sum(t for _, t in parts.values()) == 30
    assert set(parts) <= {"train.csv", "test.csv"} and set(key["From"]) == set(parts)
    submission.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(SystemExit, match="ImageIds are not those"):
        module.score(tmp_path / "cut_answers.csv", tmp_path / "short.csv")


def test_tables_take_the_test_column_of_unlabelled_runs_from_their_scores(tmp_path, monkeypatch) -> None:
    tables = _tables()
    monkeypatch.setattr(tables, "HERE", tmp_path)
    study = tmp_path / "kaggle"
    for i in range(3):
        job = study / f"{i}_seed={i}"
        job.mkdir(parents=True)
        record = {"val_acc": [0.99, 0.9952], "val_acc_best": 0.9952, "best_epoch": 2, "test_acc": None, "epochs": 2}
        (job / "metrics.json").write_text(json.dumps({**record, "epoch_seconds": [10.0, 12.0]}))
    rows = ["submission,correct,total,accuracy"]
    rows += [f"outputs/k/{i}_seed={i}/submission.csv,0,1,{acc}" for i, acc in enumerate([0.995, 0.996, 0.994])]
    rows.append("outputs/k_ens/submission.csv,0,1,0.9971")
    (study / "scores.csv").write_text("\n".join(rows) + "\n")
    ensemble = {"n_members": 3, "test_acc": None, "submission": "outputs/k_ens/submission.csv"}
    (study / "ensemble.json").write_text(json.dumps(ensemble))
    table = tables.table("kaggle")
    assert "| seed=1 | 99.52% | 99.52% (2) | 99.60% | 2 | 11.0 |" in table
    assert "| **mean ± sd** | 99.52% ± 0.00 | | **99.500% ± 0.100** | | |" in table
    assert "| **ensemble of the 3** (mean softmax) | | | **99.71%** | | |" in table


@pytest.mark.parametrize("study, run_studies", ENSEMBLE_STUDIES)
def test_readme_ensembles_are_the_committed_selections(study: str, run_studies: list[str]) -> None:
    """Each ensemble of a shared-split study, and how --select built it, as the committed ensemble.json files say."""
    tables = _tables()
    names = sorted(p.stem for p in (ROOT / "results" / study).glob("*.json"))
    summary = tables.ensembles(study)
    assert names and summary.count("\n") == 1 + len(names)
    assert summary in (ROOT / "results" / study / "README.md").read_text()
    for name in names:
        record = json.loads((ROOT / "results" / study / f"{name}.json").read_text())
        chosen = [step["run"] for step in record["selection"]["steps"]]
        assert chosen == [m["run"] for m in record["members"]] and len(set(chosen)) == record["n_members"]
        assert all(not run.startswith("/") for run in chosen)  # paths relative to the repository
        assert tables.steps(study, name) in (ROOT / "results" / study / "README.md").read_text()
    for runs_study in run_studies:  # their records are checked with every study's, below
        assert tables.table(runs_study) in (ROOT / "results" / study / "README.md").read_text()


def _ensemble_records() -> list:
    return sorted(p for p in (ROOT / "results").glob("*/*.json") if "members" in json.loads(p.read_text()))


@pytest.mark.parametrize("path", _ensemble_records(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_an_ensemble_is_published_only_if_it_recomputes_from_committed_softmax(path) -> None:
    """An ensemble whose members' softmax are committed must recompute to its recorded accuracy; one whose are not
    may stay in its study's record but is quoted nowhere a reader starts: the README, the results index, docs/."""
    record = json.loads(path.read_text())
    recomputed = _tables().recompute(path)
    if recomputed is not None:  # an unlabelled test split is scored by the study's answer key (scores.csv)
        recorded = record["test_acc"]
        if recorded is None:
            recorded = _tables().kaggle_scores(path.parent.name)[record["submission"]]
        assert recomputed == recorded
        return
    if record["test_acc"] is None:
        return
    quoted = f"{100 * record['test_acc']:.2f}%"
    # The studies whose ensembles do recompute, by the accuracy they quote: a sentence that names one of them is
    # about that ensemble, whatever other record happens to hold the same number.
    backed: dict[str, set[str]] = {}
    for other in _ensemble_records():
        acc = _tables().recompute(other)
        if acc is not None:
            backed.setdefault(f"{100 * acc:.2f}%", set()).add(other.parent.name)
    for page in [ROOT / "README.md", ROOT / "results" / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = " ".join(page.read_text().replace(f"{100 * record['test_acc']:.3f}", "").split())
        for m in re.finditer(re.escape(quoted), text):
            window = text[max(0, m.start() - 200) : m.end() + 200]
            if not re.search(r"ensemble|together|networks", window):
                continue  # the same figure for something else (a photo test, a single network)
            assert any(name in window for name in backed.get(quoted, ())), (page, quoted, window)


def test_an_ensemble_recomputes_from_compact_softmax(tmp_path, monkeypatch) -> None:
    """collect.sh's softmax.npz (float16) gives back the ensemble digits.ensemble computed from predictions.npz."""
    from digits.ensemble import ensemble
    from digits.runs import RunDir, RunRecord

    tables = _tables()
    monkeypatch.setattr(tables, "HERE", tmp_path / "results")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    runs = []
    for i in range(3):
        run = RunDir(tmp_path / "outputs" / "results" / "study" / f"{i}_seed={i}")
        run.path.mkdir(parents=True)
        logits = rng.normal(size=(500, 10)) + 2.5 * np.eye(10)[labels] * (rng.random((500, 1)) < 0.8)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        run.write_predictions({"test_probs": probs.astype(np.float32), "test_labels": labels})
        run.write_record(RunRecord(status="completed", val_acc_best=0.9, val_acc=[0.9], tested_weights="best"))
        kept = tmp_path / "results" / "study" / run.path.name
        kept.mkdir(parents=True)
        run.write_compact_softmax(kept / "softmax.npz")
        runs.append(run.path)
    result = ensemble(runs)
    result.pop("predictions")
    result["members"] = [
        {**m, "run": str(Path("outputs/results/study") / Path(m["run"]).name)} for m in result["members"]
    ]
    path = tmp_path / "results" / "study" / "ensemble.json"
    path.write_text(json.dumps(result))
    assert 0.5 < result["test_acc"] < 1 and tables.recompute(path) == result["test_acc"]
    assert (tmp_path / "results" / "study" / "0_seed=0" / "softmax.npz").stat().st_size < 15_000


def test_the_search_comparison_is_the_committed_studies() -> None:
    """The pruning comparison, recomputed from the two studies' study.db and their trials' records."""
    pytest.importorskip("optuna")
    table = _tables().search(["search_none", "search_median"])
    assert table.count("\n") == 3
    assert table in (ROOT / "results" / "README.md").read_text()
    front = table.replace("](search_", "](results/search_")
    assert front in (ROOT / "README.md").read_text()
    for study in ("search_none", "search_median"):
        assert _tables().table(study) in (ROOT / "results" / study / "README.md").read_text()


def test_the_index_quotes_deottes_time_from_the_records() -> None:
    """results/README.md's cost of `model=deotte`: its median epoch time over best_bf16's, the same machine."""
    import statistics

    tables = _tables()

    def median_epoch(study: str) -> float:
        return statistics.median(statistics.median(m["epoch_seconds"]) for _, m in tables.jobs(study))

    ratio = median_epoch("best_deotte") / median_epoch("best_bf16")
    assert f"at {ratio:.2f}x the median epoch time" in (ROOT / "results" / "README.md").read_text()


def test_no_committed_record_names_a_path_of_the_machine_it_ran_on() -> None:
    """Every record of every study, searches included: no absolute path, no home or temporary folder, no
    sqlite:////<abs> URL."""
    machine = re.compile(r'"/(?:tmp|root|home|work|Users|var)/|sqlite:////|: /(?:tmp|root|home|work)/')
    files = [p for p in (ROOT / "results").rglob("*") if p.suffix in (".json", ".yaml", ".csv") and p.is_file()]
    assert len(files) > 150
    found = [str(p.relative_to(ROOT)) for p in files if machine.search(p.read_text(errors="replace"))]
    assert not found, found[:5]


def _interval_text(study: str, job: str) -> tuple[str, str, float, float]:
    from digits import stats

    m = dict(_tables().jobs(study))[job]
    n = m["data"]["n_test"]
    lo, hi = stats.interval(round(m["test_acc"] * n), n)
    return f"{100 * m['test_acc']:.2f}%", f"{100 * lo:.2f}-{100 * hi:.2f}%", lo, hi


def test_the_report_studies_say_which_test_differences_are_noise() -> None:
    """The README's readings of the two studies' test columns, from the records: each accuracy's Wilson interval, and
    beyond noise only where the intervals do not overlap."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    sgd, sgd_ci, sgd_lo, sgd_hi = _interval_text("optim_grid", "2_lr=0.1,optim=sgd")
    adam, adam_ci, adam_lo, adam_hi = _interval_text("optim_grid", "3_lr=0.001,optim=adam")
    assert f"SGD 0.1 {sgd} (95% interval {sgd_ci}), Adam 0.001 {adam} ({adam_ci}), within noise" in readme
    assert sgd_lo < adam_hi and adam_lo < sgd_hi  # overlapping: within noise
    orig, orig_ci, orig_lo, _ = _interval_text("compare_models", "0_model=original")
    lenet, lenet_ci, lenet_lo, lenet_hi = _interval_text("compare_models", "1_model=lenet")
    alex, _, alex_lo, alex_hi = _interval_text("compare_models", "2_model=alexnet")
    assert f"`original`'s {orig} (95% interval {orig_ci}) lies above LeNet's interval ({lenet_ci[:-1]}%)" in readme
    assert orig_lo > lenet_hi  # apart: beyond noise
    assert f"intervals overlap ({lenet} and {alex})" in readme and lenet_lo < alex_hi and alex_lo < lenet_hi


def test_the_quick_starts_epoch_times_are_the_records() -> None:
    """The README's per-epoch times by CPU: each study's median over its runs of their median epoch."""
    import statistics

    def epoch(study: str) -> str:
        runs_ = [statistics.median(m["epoch_seconds"]) for _, m in _tables().jobs(study)]
        return f"{statistics.median(runs_):.0f} s"

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"took {epoch('optim_grid')} on 2 Intel Xeon cores in fp32 (results/optim_grid)" in readme
    assert f"{epoch('best_zen4')} on 2 AMD EPYC Zen 4 cores in bf16 (results/best_zen4)" in readme
    assert f"{epoch('best_amd')} on 2 cores of a 2.0 GHz first-generation AMD EPYC in fp32 (results/best_amd)" in readme
