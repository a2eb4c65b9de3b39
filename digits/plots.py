"""Figures: learning curves of many runs on shared axes, a confusion matrix, a grid of misclassified digits.

The curves come from each run's metrics.json, which holds every epoch's metrics whichever loggers ran (and, for a
run still training or one recorded before metrics.json kept them, from its TensorBoard event files). Figures are
built with matplotlib's object API (no pyplot): no global backend to choose, nothing to close, and they still display
inline in a notebook.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CURVE_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc")


def read_curves(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch scalars of one run (columns: epoch (1-based), train/loss, ...): metrics.json's per-epoch lists, or
    the event files where it has none (scalars are written at step = epoch; in a resumed run's several event files
    the last value written for an epoch wins)."""
    from digits.runs import read_metrics

    record = read_metrics(run_dir) or {}
    if record.get("train_loss"):
        table = {tag: record.get(tag.replace("/", "_")) or [] for tag in CURVE_TAGS}
        frame = pd.DataFrame({t: pd.Series(v, dtype="float64") for t, v in table.items() if len(v)})
        frame.insert(0, "epoch", range(1, len(frame) + 1))
        return frame
    return _event_curves(run_dir)


def _event_curves(run_dir: str | Path) -> pd.DataFrame:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    table: dict[int, dict[str, float]] = {}
    for tag in CURVE_TAGS:
        if tag in tags:
            for e in acc.Scalars(tag):
                table.setdefault(e.step, {})[tag] = e.value
    if not table:
        return pd.DataFrame(columns=["epoch", *CURVE_TAGS])
    frame = pd.DataFrame.from_dict(table, orient="index").sort_index()
    frame.index.name = "epoch"
    return frame.reset_index()


def curves_figure(curves: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """The report's figure: training loss and validation accuracy per epoch, one line per run, shared axes."""
    validated = any("val/acc" in frame and frame["val/acc"].notna().any() for frame in curves.values())
    # Runs that all end above 98% look alike on an accuracy axis: their error, on a log scale, tells them apart.
    ends = [
        frame["val/acc"].dropna().iloc[-1]
        for frame in curves.values()
        if "val/acc" in frame and frame["val/acc"].notna().any()
    ]
    high = validated and min(ends) >= 0.98 and min(ends) < 1
    panels = 1 + validated + high
    fig = Figure(figsize=(6.5 + 5.5 * (panels - 1), 4.5))
    # Runs trained on every row (data.val_fraction=0) have no validation curve: no empty panel for them.
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax_loss, ax_acc = axes[0], (axes[1] if validated else None)
    ax_err = axes[2] if high else None
    for name, frame in curves.items():
        if "train/loss" in frame:
            ax_loss.plot(frame["epoch"], frame["train/loss"], marker=".", label=name)
        if ax_acc is not None and "val/acc" in frame:
            ax_acc.plot(frame["epoch"], 100 * frame["val/acc"], marker=".", label=name)
        if ax_err is not None and "val/acc" in frame:
            ax_err.plot(frame["epoch"], 100 * (1 - frame["val/acc"]), marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log", title="training loss")
    if ax_acc is not None:
        ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    if ax_err is not None:
        ax_err.set(xlabel="epoch", ylabel="validation error (%, log scale)", yscale="log", title="validation error")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = (ax_acc or ax_loss).get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(textwrap.fill(title.replace(",", ", "), 55 + 50 * (panels - 1)))  # fit a long override list
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(labels) - 1) // 3), 1, 1))
    return fig


def confusion_matrix(probs: np.ndarray, labels: np.ndarray, classes: int = 10) -> np.ndarray:
    pred = probs.argmax(1)
    return np.bincount(labels * classes + pred, minlength=classes * classes).reshape(classes, classes)


def confusion_figure(probs: np.ndarray, labels: np.ndarray, split: str = "") -> Figure:
    cm = confusion_matrix(probs, labels)
    fig = Figure(figsize=(6, 5.4))
    ax = fig.subplots()
    off = cm.astype(float)
    np.fill_diagonal(off, np.nan)  # colour the mistakes; the diagonal would swamp them
    im = ax.imshow(off, cmap="Reds")
    dark = np.nanmax(off) / 2 if np.isfinite(off).any() else np.inf
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            white = i != j and cm[i, j] > dark
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if white else "black")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
    where = f"{split} " if split else ""
    ax.set_title(f"{where}confusion matrix: {cm.sum() - np.trace(cm)} errors of {cm.sum()} ({100 * acc:.2f}% correct)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="count (off-diagonal)")
    fig.tight_layout()
    return fig


def top_mistakes(probs: np.ndarray, labels: np.ndarray, limit: int = 48) -> np.ndarray:
    """Indices of misclassified samples, most confident mistakes first."""
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    return wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:limit]


def mistakes_figure(probs: np.ndarray, labels: np.ndarray, index: np.ndarray, images: np.ndarray) -> Figure:
    """A grid of the misclassified digits images[k] (sample index[k]), each captioned 'pred p (true t)'.

    One tiled image on one axes: matplotlib spends ~30 ms per subplot, and this runs at the end of every training run.
    """
    pred = probs.argmax(1)
    cols = 8
    rows = max(1, -(-len(index) // cols))
    cell_h, cell_w = 40, 34  # 28x28 digit plus room for its caption
    canvas = np.zeros((rows * cell_h, cols * cell_w), dtype=np.uint8)
    fig = Figure(figsize=(cols * 1.25, rows * 1.45))
    ax = fig.subplots()
    for k, (i, img) in enumerate(zip(index, images)):
        r, c = divmod(k, cols)
        y, x = r * cell_h + 10, c * cell_w + 3
        canvas[y : y + 28, x : x + 28] = np.asarray(img).reshape(28, 28)
        ax.text(
            x + 14,
            y - 2,
            f"pred {pred[i]} (true {labels[i]})",
            ha="center",
            va="bottom",
            fontsize=6.5,
            color="firebrick",
        )
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    total = int((pred != labels).sum())
    ax.set_title(f"{total} misclassified of {len(labels)}; the {len(index)} most confident shown", fontsize=9)
    fig.tight_layout()
    return fig


def labelled_split(preds: dict[str, Any]) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """The split to judge a run on in figures: test if it is labelled, else validation."""
    for split in ("test", "val"):
        if f"{split}_labels" in preds and f"{split}_probs" in preds:
            return split, preds[f"{split}_probs"], preds[f"{split}_labels"]
    return "", None, None


def save(fig: Figure, path: str | Path) -> Path:
    """Write a PNG whole or not at all (a temp file, then a rename); an unwritable place is the user's to fix."""
    import os

    from digits.errors import UserError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write the figure ({e.strerror or e})", path) from None
    return path


def draw_run(run_dir: Path, out: Path) -> list[Path]:
    """A run's curves.png, confusion.png and misclassified.png, written into `out` (what it has data for); also
    what logger=mlflow uploads."""
    from digits import runs
    from digits.errors import UserError

    written = []
    curves = read_curves(run_dir)
    name = runs.labels([run_dir])[run_dir]
    if len(curves):
        written.append(save(curves_figure({name: curves}, title=name), out / "curves.png"))
    if runs.RunDir(run_dir).predictions.is_file():
        preds = runs.read_predictions(run_dir)
        split, probs, labels = labelled_split(preds)
        if probs is not None and labels is not None:
            if probs.ndim != 2 or probs.shape != (len(labels), 10):
                raise UserError(f"predictions.npz holds {split}_probs of shape {probs.shape}", run_dir)
            written.append(save(confusion_figure(probs, labels, split), out / "confusion.png"))
            if "mistake_index" in preds and "mistake_images" in preds:
                fig = mistakes_figure(probs, labels, preds["mistake_index"], preds["mistake_images"])
                written.append(save(fig, out / "misclassified.png"))
    return written
