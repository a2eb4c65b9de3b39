"""digits.compare and the noise statistics, against an independent computation (exact binomial sums and the Wilson
formula written out here), and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digits import stats

Z95 = 1.959963984540054


def _mcnemar_by_hand(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


@settings(deadline=None)  # the first call imports scipy
@given(b=st.integers(0, 60), c=st.integers(0, 60))
def test_mcnemar_is_the_exact_binomial_test(b: int, c: int) -> None:
    assert stats.mcnemar_exact(b, c) == pytest.approx(_mcnemar_by_hand(b, c), rel=1e-9, abs=1e-12)


@settings(deadline=None)
@given(n=st.integers(1, 20000), frac=st.floats(0, 1))
def test_the_interval_is_wilsons(n: int, frac: float) -> None:
    k = round(frac * n)
    lo, hi = stats.interval(k, n)
    want = _wilson_by_hand(k, n)
    assert lo == pytest.approx(want[0], abs=1e-9) and hi == pytest.approx(want[1], abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def _record(d: Path, preds: np.ndarray, labels: np.ndarray, fingerprint: str = "abc") -> Path:
    """A committed record's softmax.npz: one-hot probabilities of the given predictions."""
    d.mkdir(parents=True)
    probs = np.eye(10, dtype=np.float16)[preds] * 0.9 + 0.01
    np.savez_compressed(
        d / "softmax.npz", test_probs=probs, test_labels=labels.astype(np.int8), test_fingerprint=fingerprint
    )
    (d / "metrics.json").write_text(json.dumps({"status": "completed"}))
    return d


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), n=st.integers(50, 400))
def test_compare_counts_the_discordant_images(tmp_path_factory: pytest.TempPathFactory, seed: int, n: int) -> None:
    from digits.compare import compare, side

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    a = np.where(rng.random(n) < 0.9, labels, (labels + 1) % 10)
    b = np.where(rng.random(n) < 0.85, labels, (labels + 2) % 10)
    root = tmp_path_factory.mktemp("cmp")
    r = compare(side(_record(root / "a", a, labels)), side(_record(root / "b", b, labels)))
    a_ok, b_ok = a == labels, b == labels
    assert (r.a_correct, r.b_correct) == (int(a_ok.sum()), int(b_ok.sum()))
    assert (r.a_only, r.b_only) == (int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum()))
    assert r.p_value == pytest.approx(_mcnemar_by_hand(r.a_only, r.b_only), rel=1e-9)


def test_a_sweep_dir_stands_for_its_ensemble(tmp_path: Path) -> None:
    from digits.compare import side

    labels = np.arange(40) % 10
    _record(tmp_path / "s" / "0_seed=0", labels, labels)
    _record(tmp_path / "s" / "1_seed=1", (labels + 1) % 10, labels)
    s = side(tmp_path / "s")
    assert s.members == 2 and s.probs.shape == (40, 10)


def test_runs_tested_on_other_images_are_refused_in_one_line(tmp_path: Path) -> None:
    labels = np.arange(30) % 10
    a = _record(tmp_path / "a", labels, labels, fingerprint="one")
    b = _record(tmp_path / "b", labels, labels, fingerprint="two")
    proc = run_cli([str(a), str(b)], cwd=tmp_path, module="digits.compare", check=False)
    one_line_error(proc, "not tested on the same images")


def test_the_cli_on_committed_records(tmp_path: Path) -> None:
    """The front page's ensemble against one of its members, as a user types it; --json holds the same numbers."""
    study = ROOT / "results" / "best_zen3"
    member = study / "0_seed=0"
    text = run_cli([str(study), str(member)], cwd=tmp_path, module="digits.compare").stdout
    out = json.loads(run_cli([str(study), str(member), "--json"], cwd=tmp_path, module="digits.compare").stdout)
    assert out["a_members"] == 3 and out["n"] == 10000
    assert f"A right and B wrong on {out['a_only']}, A wrong and B right on {out['b_only']}" in text
    assert out["p_value"] == pytest.approx(_mcnemar_by_hand(out["a_only"], out["b_only"]))
    assert ("beyond noise" in text) == out["beyond_noise"]
