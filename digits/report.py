"""Figures and tables for a run or a sweep: `python -m digits.report <run dir | sweep dir>`.

A sweep dir gets curves.png (training loss and validation accuracy of every job on shared axes, the report's
figures, each job named by the overrides it varied) and a refreshed summary.csv/summary.md. A run dir gets
curves.png, confusion.png and misclassified.png (from its predictions.npz). The PNGs are written next to the runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from digits import runs
from digits.errors import ArgumentParser, UserError, cli, positive_int


def report_run(run_dir: Path) -> list[Path]:
    from digits.plots import draw_run

    written = draw_run(run_dir, run_dir)
    if not written:
        raise UserError("nothing to draw: no TensorBoard scalars and no predictions.npz", run_dir)
    return written


def report_sweep(sweep_dir: Path, top: int | None = None) -> list[Path]:
    from digits import plots, sweep

    frame = sweep.write_summary(sweep_dir)
    jobs = runs.job_dirs(sweep_dir)
    names = runs.labels(jobs)
    by_job = {d.name: d for d in jobs}
    order = [by_job[j] for j in frame["job"].astype(str) if j in by_job]  # best validation accuracy first
    if top is not None:
        order = order[:top]
    status = dict(zip(frame["job"].astype(str), frame["status"]))
    curves = {}
    for d in order:
        c = plots.read_curves(d)
        if len(c):
            mark = "" if status.get(d.name) == "completed" else f" [{status.get(d.name)}]"
            curves[names[d] + mark] = c
    if not curves:
        raise UserError("no job of this sweep has logged any epoch yet", sweep_dir)
    runs_drawn = f"{len(curves)} run{'' if len(curves) == 1 else 's'}"
    varying = sorted({kv.split("=", 1)[0] for name in names.values() for kv in name.split(",") if "=" in kv})
    what = f" varying {', '.join(varying)}" if varying else ""
    where = f"{sweep_dir.parent.name}/{sweep_dir.name}" if sweep_dir.parent.name[:2].isdigit() else sweep_dir.name
    title = f"{where}: {runs_drawn}{what}" + (f" (best {top} by validation accuracy)" if top else "")
    out = sweep_dir / (f"curves_top{top}.png" if top else "curves.png")
    return [plots.save(plots.curves_figure(curves, title=title), out), sweep_dir / "summary.md"]


@cli
def main(argv: list[str] | None = None) -> None:

    parser = ArgumentParser(prog="python -m digits.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run dir (outputs/<date>/<time>) or a sweep dir")
    parser.add_argument(
        "--top", type=positive_int, default=None, help="sweeps: plot only the N best jobs, ranked as in the summary"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path: Path = args.path
    if not path.is_dir():
        raise UserError("no such run or sweep dir", path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError("is not writable; the figures are written next to the runs", path)
    kind = runs.RunDir(path).kind()  # figures go only into a run's or a sweep's own dir (the run-dir rule)
    if kind == "run":
        written = report_run(path)
    elif kind in ("sweep", None, "foreign") and runs.job_dirs(path):
        written = report_sweep(path, args.top)
    else:
        raise UserError("neither a run dir (metrics.json, .hydra/) nor a sweep dir (job sub-dirs)", path)
    for p in written:
        print(p)


if __name__ == "__main__":
    main()
