"""Property: any corruption of a valid CSV either parses to valid arrays or ends in the one-line UserError."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
from helpers import synthetic_digits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digits.data.csv import KAGGLE_COLUMNS, parse_csv
from digits.errors import UserError


def _valid(rows: int = 3) -> bytes:
    x, y = synthetic_digits(rows)
    lines = [",".join(["label", *KAGGLE_COLUMNS])]
    lines += [",".join([str(y[i]), *map(str, x[i])]) for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


VALID = _valid()
BODY = VALID.index(b"\n") + 1  # first byte after the 7.6 kB header: most mutations should hit the data rows

mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(BODY, len(VALID) - 1), st.binary(min_size=1, max_size=3)),
    st.tuples(
        st.just("replace"),
        st.integers(BODY, len(VALID) - 1),
        st.sampled_from([b"9", b"99", b"999", b"-", b"a", b" ", b",", b",,", b"\n", b".5", b"1e3", b'"', b"\xef"]),
    ),
    st.tuples(st.just("delete"), st.integers(BODY, len(VALID) - 1), st.integers(1, 12)),
    st.tuples(st.just("replace"), st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, len(VALID)), st.sampled_from([b",", b"\n", b"\r\n", b"-", b"\x00"])),
    st.tuples(st.just("delete"), st.integers(0, len(VALID) - 1), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID)), st.just(0)),
)


def _apply(data: bytes, mutations: list) -> bytes:
    for kind, pos, arg in mutations:
        pos = min(pos, len(data))
        if kind == "replace":
            data = data[:pos] + arg + data[pos + len(arg) :]
        elif kind == "insert":
            data = data[:pos] + arg + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + arg :]
        else:
            data = data[:pos]
    return data


def _check(path: Path) -> None:
    try:
        got = parse_csv(path, require_label=True)
    except UserError as e:
        text = str(e)
        assert "\n" not in text and text.startswith(str(path)), text
        return
    assert got.images.dtype == np.uint8 and got.images.shape[1:] == (28, 28) and len(got.images) >= 1
    assert got.labels is not None and got.labels.min() >= 0 and got.labels.max() <= 9


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=3), st.booleans())
def test_corrupted_csv_parses_or_fails_in_one_line(mutations: list, gzipped: bool) -> None:
    data = _apply(VALID, mutations)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("train.csv.gz" if gzipped else "train.csv")
        path.write_bytes(gzip.compress(data) if gzipped else data)
        _check(path)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash_the_reader(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train.csv"
        path.write_bytes(data)
        _check(path)
