"""Which differences between runs are noise: intervals for an accuracy, and a paired test for two classifiers.

On MNIST's 10,000 test images one image is 0.01 points, and two networks that differ by a few images usually differ
on many more in both directions. A test accuracy is a binomial proportion, so it gets a Wilson score interval; two
runs tested on the same images are compared on the images where exactly one of them is right (the discordant pairs),
with McNemar's exact test: under "equally good", each discordant image is a fair coin (Dietterich 1998, "Approximate
Statistical Tests for Comparing Supervised Classification Learning Algorithms"). scipy.stats does the arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95  # the intervals' confidence
ALPHA = 0.05  # a paired difference with p below this is called beyond noise


def interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of an accuracy `correct / n` (it stays inside [0, 1] and is sound near 100%)."""
    from scipy.stats import binomtest

    if n <= 0:
        return (math.nan, math.nan)
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (A right and B wrong; A wrong and B right)."""
    from scipy.stats import binomtest

    n = int(a_only) + int(b_only)
    if n == 0:
        return 1.0
    return float(binomtest(int(a_only), n, 0.5, alternative="two-sided").pvalue)


@dataclass
class Paired:
    """Two classifiers on the same labelled images."""

    n: int
    a_correct: int
    b_correct: int
    a_only: int  # A right, B wrong
    b_only: int  # A wrong, B right
    p_value: float

    @property
    def beyond_noise(self) -> bool:
        return self.p_value < ALPHA

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            a_acc=self.a_correct / self.n,
            b_acc=self.b_correct / self.n,
            a_interval=list(interval(self.a_correct, self.n)),
            b_interval=list(interval(self.b_correct, self.n)),
            beyond_noise=self.beyond_noise,
            level=LEVEL,
            alpha=ALPHA,
        )
        return out


def paired(a_pred: np.ndarray, b_pred: np.ndarray, labels: np.ndarray) -> Paired:
    """Predicted classes of A and B on the same images, and the true labels."""
    a_ok, b_ok = np.asarray(a_pred) == labels, np.asarray(b_pred) == labels
    a_only, b_only = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
    return Paired(len(labels), int(a_ok.sum()), int(b_ok.sum()), a_only, b_only, mcnemar_exact(a_only, b_only))


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: one seed says nothing of the spread)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)
