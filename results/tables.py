"""Print the README's results tables from the metrics.json files committed under results/.

    python results/tables.py compare_models optim_grid best
    python results/tables.py best..best_elastic      # two recipes, seed by seed (the same seed, the same split)
    python results/tables.py shared/                  # a study's ensembles (digits.ensemble --select outputs)

So every number in the README's tables can be traced to a run's own record (or, for a run whose test split was
unlabelled, to the study's scores.csv of its submission.csv). Seconds per epoch are the median over
the run's epochs (validation included): a median, because a few epochs of some runs shared the CPU with other work.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from digits.runs import job_dirs

HERE = Path(__file__).resolve().parent


def jobs(study: str) -> list[tuple[str, dict]]:
    """Each job's (dir name, metrics.json) in sweep order (the number before the first underscore)."""
    return [(d.name, json.loads((d / "metrics.json").read_text())) for d in job_dirs(HERE / study)]


def varied(job: str) -> str:
    """What a job varied: its dir name after the job number (`3_seed=3` -> `seed=3`); a sweep of one job varied
    nothing, and its dir is the number alone."""
    return job.split("_", 1)[1] if "_" in job else job


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def score_rows(study: str) -> list[dict[str, str]]:
    """results/<study>/scores.csv (`kaggle_split.py score --out`), one row a submission.csv: the test accuracy of
    runs whose own test split was unlabelled, scored against an answer key they never saw. No file, no rows."""
    path = HERE / study / "scores.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def kaggle_scores(study: str) -> dict[str, float]:
    """Accuracy by submission.csv path."""
    return {row["submission"]: float(row["accuracy"]) for row in score_rows(study)}


def scored(study: str, records: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The records with `test_acc` filled in from the study's scores where the run could not score itself."""
    by_job = {Path(sub).parent.name: acc for sub, acc in kaggle_scores(study).items()}
    return [(n, m if m["test_acc"] is not None else {**m, "test_acc": by_job.get(n)}) for n, m in records]


def by_source(study: str) -> str:
    """A Kaggle-format study's scores split by the file of the source folder each test row came from."""
    rows = score_rows(study)
    sources = sorted({k.removeprefix("total from ") for k in rows[0] if k.startswith("total from ")}, reverse=True)
    out = [
        "| submission | all | " + " | ".join(f"from {name}" for name in sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for row in rows:
        parent = Path(row["submission"]).parent.name
        name = varied(parent) if parent[:1].isdigit() else "ensemble"
        cells = [(int(row["correct"]), int(row["total"]))]
        cells += [(int(row[f"correct from {s}"]), int(row[f"total from {s}"])) for s in sources]
        out.append(f"| {name} | " + " | ".join(f"{100 * c / t:.3f}% of {t:,}" for c, t in cells) + " |")
    return "\n".join(out)


def table(study: str) -> str:
    records = scored(study, jobs(study))
    if all(m["val_acc_best"] is None for _, m in records):
        return _table_without_validation(study, records)
    # Runs tested with averaged weights (final_weights=average) also validated them: both columns, side by side.
    averaged = any(m.get("val_acc_average") is not None for _, m in records)
    extra = " val acc, averaged weights |" if averaged else ""
    rows = [
        f"| job | val acc, last epoch |{extra} best val acc (epoch) | test acc | epochs | s / epoch |",
        "|---|---|---|---|---|---|" + ("---|" if averaged else ""),
    ]
    for name, m in records:
        cell = f" {pct(m.get('val_acc_average'))} |" if averaged else ""
        rows.append(
            f"| {varied(name)} | {pct(m['val_acc'][-1])} |{cell} {pct(m['val_acc_best'])} ({m['best_epoch']}) "
            f"| {pct(m['test_acc'])} | {m['epochs']} | {statistics.median(m['epoch_seconds']):.1f} |"
        )
    if len(records) > 2 and all(varied(name).startswith("seed=") for name, _ in records):
        test = [m["test_acc"] for _, m in records]
        val = [m["val_acc"][-1] for _, m in records]
        cell = f" {_mean_sd([m['val_acc_average'] for _, m in records], 2)} |" if averaged else ""
        rows.append(f"| **mean ± sd** | {_mean_sd(val, 2)} |{cell} | **{_mean_sd(test, 3)}** | | |")
        rows += _ensemble_row(study, blanks_before=3 + averaged, blanks_after=2)
    return "\n".join(rows)


def _mean_sd(values: list[float], digits: int) -> str:
    return f"{100 * statistics.mean(values):.{digits}f}% ± {100 * statistics.stdev(values):.{digits}f}"


def _table_without_validation(study: str, records: list[tuple[str, dict]]) -> str:
    """Runs trained on every labelled row (data.val_fraction=0) have no validation columns to show."""
    rows = ["| job | train loss, last epoch | test acc | epochs | s / epoch |", "|---|---|---|---|---|"]
    for name, m in records:
        rows.append(
            f"| {varied(name)} | {m['train_loss_last']:.4f} | {pct(m['test_acc'])} | {m['epochs']} "
            f"| {statistics.median(m['epoch_seconds']):.1f} |"
        )
    test = [m["test_acc"] for _, m in records]
    if len(test) > 1:
        rows.append(
            f"| **mean ± sd** | | **{100 * statistics.mean(test):.3f}% ± {100 * statistics.stdev(test):.3f}** | | |"
        )
    return "\n".join(rows + _ensemble_row(study, blanks_before=2, blanks_after=2))


def _ensemble_row(study: str, blanks_before: int, blanks_after: int) -> list[str]:
    ensemble = HERE / study / "ensemble.json"
    if not ensemble.is_file():
        return []
    e = json.loads(ensemble.read_text())
    if e["test_acc"] is None:
        e["test_acc"] = kaggle_scores(study).get(e.get("submission"))
    blank = " |"
    row = f"| **ensemble of the {e['n_members']}** (mean softmax) |" + blank * (blanks_before - 1)
    return [row + f" **{pct(e['test_acc'])}** |" + blank * blanks_after]


def paired(base: str, other: str) -> str:
    """Two recipes run on the same seeds: a seed fixes the split, so each row compares them on the same validation
    images, which is how a recipe change is chosen (the test column chose nothing). Runs are paired by the seed in
    their records, whatever their dirs are called."""
    a = {m["seed"]: m for _, m in jobs(base)}
    b = {m["seed"]: m for _, m in jobs(other)}
    common = [seed for seed in a if seed in b]
    columns = {
        "val acc, last epoch": (lambda m: m["val_acc"][-1], pct),
        "val loss, last epoch": (lambda m: m["val_loss_last"], lambda v: f"{v:.4f}"),
        "test acc": (lambda m: m["test_acc"], lambda v: f"{100 * v:.3f}%"),
    }
    rows = [f"| job ({base} / {other}) | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, names in [(f"seed={n}", [n]) for n in common] + [("**mean**", common)]:
        cells = [
            f"{fmt(statistics.mean(get(a[n]) for n in names))} / {fmt(statistics.mean(get(b[n]) for n in names))}"
            for get, fmt in columns.values()
        ]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _composition(members: list[dict]) -> str:
    """Which sweeps the members came from, by the name of each run's sweep dir: `shared_original 4, best_zen4 1`."""
    counts = Counter(Path(m["run"]).parent.name for m in members)
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def ensembles(study: str) -> str:
    """The ensembles of a study, each an ensemble.json of `digits.ensemble --select K` (K = all members where the
    members were fixed beforehand) saved as results/<study>/<name>.json: on the validation images their members
    share, and on test."""
    rows = [
        "| ensemble (mean softmax) | members | from | val acc | val log loss | test acc |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted((HERE / study).glob("*.json")):
        e = json.loads(path.read_text())
        last = e["selection"]["steps"][-1]
        rows.append(
            f"| {path.stem} | {e['n_members']} | {_composition(e['members'])} | {pct(last['ensemble_val_acc'])} "
            f"| {last['ensemble_val_log_loss']:.4f} | {pct(e['test_acc'])} |"
        )
    return "\n".join(rows)


def steps(study: str, name: str) -> str:
    """How --select built results/<study>/<name>.json, step by step: the member each step added and the ensemble
    it made, on the shared validation split."""
    e = json.loads((HERE / study / f"{name}.json").read_text())
    test = {m["run"]: m["test_acc"] for m in e["members"]}
    rows = [
        "| step | added | its val acc | its val log loss | ensemble val acc | ensemble val log loss | its test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(e["selection"]["steps"], 1):
        run = Path(s["run"])
        rows.append(
            f"| {i} | {run.parent.name}/{run.name} | {pct(s['member_val_acc'])} | {s['member_val_log_loss']:.4f} "
            f"| {pct(s['ensemble_val_acc'])} | {s['ensemble_val_log_loss']:.4f} | {pct(test[s['run']])} |"
        )
    return "\n".join(rows)


def member_softmax(run: str) -> Path:
    """Where a committed member's softmax lies: an ensemble names its members as they were run,
    outputs/results/<study>/<job>, and collect.sh copies them to results/<study>/<job>/softmax.npz."""
    parts = Path(run).parts
    return HERE / parts[-2] / parts[-1] / "softmax.npz"


def recompute(ensemble: Path) -> float | None:
    """An ensemble's test accuracy from its members' committed softmax (their mean, then argmax), or None when a
    member's softmax was not committed."""
    import numpy as np

    record = json.loads(ensemble.read_text())
    files = [member_softmax(m["run"]) for m in record["members"]]
    if not files or not all(f.is_file() for f in files):
        return None
    arrays = [np.load(f) for f in files]
    labels = test_labels(ensemble.parent, arrays[0])
    if labels is None:
        return None
    mean = np.mean([a["test_probs"].astype(np.float32) for a in arrays], axis=0)
    return float((mean.argmax(1) == labels).mean())


ANSWERS = "answers.csv.gz"  # a Kaggle-format study's answer key (results/kaggle_split.py), for its unlabelled test rows


def test_labels(study_dir: Path, softmax):
    """The labels of a run's test rows: its own, or for an unlabelled (Kaggle-format) test split the study's answer
    key, in ImageId order (the order of test.csv's rows and of the softmax); None when neither is committed."""
    import numpy as np

    if "test_labels" in softmax:
        return softmax["test_labels"].astype(np.int64)
    key = study_dir / ANSWERS
    if not key.is_file():
        return None
    import gzip

    with gzip.open(key, "rt") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: int(r["ImageId"]))
    return np.array([int(r["Label"]) for r in rows], dtype=np.int64)


def search(studies: list[str]) -> str:
    """Searches compared: their trials by state, the epochs all trials trained (what pruning saves, whatever else
    the CPU was doing), wall time from the study's own timestamps, and the best trial's validation accuracy and
    (once) test accuracy, from results/<study>/study.db and the trials' records."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [
        "| search | complete | pruned | epochs trained | wall time | best val acc (trial) | its test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for study_dir in studies:
        study = optuna.load_study(study_name="digits", storage=f"sqlite:///{HERE / study_dir / 'study.db'}")
        states = Counter(t.state.name for t in study.trials)
        starts = [t.datetime_start for t in study.trials if t.datetime_start]
        ends = [t.datetime_complete for t in study.trials if t.datetime_complete]
        wall = (max(ends) - min(starts)).total_seconds() / 60
        records = [m for _, m in jobs(study_dir)]
        epochs = sum(m["epochs"] for m in records)
        best = study.best_trial
        best_record = next(m for name, m in jobs(study_dir) if name.split("_", 1)[0] == str(best.user_attrs["job_num"]))
        rows.append(
            f"| [{study_dir}]({study_dir}/README.md) | {states['COMPLETE']} | {states['PRUNED']} | {epochs} "
            f"| {wall:.0f} min | {pct(best.value)} ({best.number}) | {pct(best_record['test_acc'])} |"
        )
    return "\n".join(rows)


# The CPU each study of the unchanged recipe ran on: the records hold the precision and the times, not the CPU's name.
MACHINES = {
    "best": "Intel Xeon (AVX-512)",
    "best_bf16": "Intel Xeon with AMX",
    "best_zen4": "AMD EPYC, Zen 4 (AVX512-BF16)",
    "best_amd": "AMD EPYC, Zen 1, 2.0 GHz (AVX2)",
}


def machines() -> str:
    """The unchanged recipe (`experiment=best`, seeds as run) on each CPU: one table, from the records."""
    rows = [
        "| CPU (2 cores) | study | precision | runs | test acc, one network | minutes a run (median) |",
        "|---|---|---|---|---|---|",
    ]
    for study, cpu in MACHINES.items():
        records = [m for _, m in jobs(study)]
        test = [m["test_acc"] for m in records]
        acc = _mean_sd(test, 3) if len(test) > 1 else f"{100 * test[0]:.3f}%"
        minutes = statistics.median(m["train_seconds"] for m in records) / 60
        precision = ", ".join(sorted({m["precision"] for m in records}))
        rows.append(f"| {cpu} | [{study}]({study}/README.md) | {precision} | {len(records)} | {acc} | {minutes:.0f} |")
    return "\n".join(rows)


def kaggle_reading(study: str, mnist_study: str = "headline") -> str:
    """What a Kaggle-format study's committed softmax say, against the MNIST study of the same machine: one network
    on all rows and on the rows from each MNIST file, and the ensemble against its best member (McNemar)."""
    import gzip

    import numpy as np

    from digits import stats

    folder = HERE / study
    members = jobs(study)
    arrays = [np.load(folder / name / "softmax.npz") for name, _ in members]
    labels = test_labels(folder, arrays[0])
    with gzip.open(folder / ANSWERS, "rt") as f:
        key = sorted(csv.DictReader(f), key=lambda r: int(r["ImageId"]))
    source = np.array([r["From"] for r in key])
    preds = [a["test_probs"].astype(np.float32).argmax(1) for a in arrays]
    right = [p == labels for p in preds]
    mean_all = 100 * statistics.mean(float(r.mean()) for r in right)
    mean_from = {
        f: 100 * statistics.mean(float(r[source == f].mean()) for r in right) for f in ("train.csv", "test.csv")
    }
    mnist = 100 * statistics.mean(m["test_acc"] for _, m in jobs(mnist_study))
    together = np.mean([a["test_probs"].astype(np.float32) for a in arrays], axis=0).argmax(1)
    best = int(np.argmax([r.mean() for r in right]))
    pair = stats.paired(together, preds[best], labels)
    verdict = "beyond noise" if pair.p_value < stats.ALPHA else "within noise"
    as_high = "as high as" if round(mean_from["test.csv"], 2) >= round(mnist, 2) else "below"
    return (
        f"One network of this recipe scores {mean_all:.2f}% here against {mnist:.2f}% on MNIST's test split on the "
        f"same CPU ([{mnist_study}](../{mnist_study}/README.md)). The gap is in the images: on the "
        f"{int((source == 'test.csv').sum()):,} MNIST test images among the 28,000 the same runs score "
        f"{mean_from['test.csv']:.2f}% on average, {as_high} the {mnist:.2f}% of {mnist_study} with 54,000 training "
        f"rows, and on the {int((source == 'train.csv').sum()):,} MNIST training images {mean_from['train.csv']:.2f}%; "
        "a random cut of all 70,000 puts six of MNIST's training images in the test rows for every one of its test "
        f"images. The five together score {100 * pair.a_correct / pair.n:.2f}%: {pair.a_only} rows right that the "
        f"best member ({varied(members[best][0])}, {100 * pair.b_correct / pair.n:.2f}%) gets wrong, {pair.b_only} "
        f"the other way, McNemar p = {pair.p_value:.2f}, {verdict}. On a Kaggle-format split drawn from all of MNIST, "
        f"expect about {mean_all:.2f}% from one network of this recipe."
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["machines"]:
        print(machines())
        sys.exit()
    if sys.argv[1:2] == ["search"]:
        print(search(sys.argv[2:]))
        sys.exit()
    for study in sys.argv[1:] or ["compare_models", "optim_grid", "best"]:
        if study.endswith("/"):
            print(f"{study}\n\n{ensembles(study.rstrip('/'))}\n")
            for path in sorted((HERE / study).glob("*.json")):
                print(f"{study}{path.stem}, step by step:\n\n{steps(study.rstrip('/'), path.stem)}\n")
            continue
        print(f"{study}:\n\n{paired(*study.split('..')) if '..' in study else table(study)}\n")
        if (HERE / study / "scores.csv").is_file():
            print(f"{study}, by source:\n\n{by_source(study)}\n")
        if (HERE / study / ANSWERS).is_file():
            print(f"{study}, read:\n\n{kaggle_reading(study)}\n")
