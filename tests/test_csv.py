"""CSV parsing: both header styles, the parse cache, and a one-line error naming file, row and column."""

from __future__ import annotations

import gzip
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_folder, synthetic_digits, write_digits_csv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digits.data.csv import GRID_COLUMNS, KAGGLE_COLUMNS, cache_path, load_csv, parse_csv
from digits.errors import UserError


def _rows(n: int = 5, label: bool = True, columns: list[str] = KAGGLE_COLUMNS) -> list[str]:
    x, y = synthetic_digits(n)
    head = (["label"] if label else []) + columns
    lines = [",".join(head)]
    for i in range(n):
        cells = ([str(y[i])] if label else []) + [str(v) for v in x[i]]
        lines.append(",".join(cells))
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("header", ["kaggle", "grid"])
def test_both_header_styles_parse_to_the_same_arrays(tmp_path: Path, header: str) -> None:
    x, y = synthetic_digits(50)
    path = write_digits_csv(tmp_path / "train.csv", x, y, header)
    got = parse_csv(path, require_label=True)
    assert got.images.dtype == np.uint8 and got.images.shape == (50, 28, 28)
    np.testing.assert_array_equal(got.images.reshape(50, -1), x)
    np.testing.assert_array_equal(got.labels, y)


def test_unlabelled_and_labelled_test_files(tmp_path: Path) -> None:
    x, y = synthetic_digits(20)
    assert parse_csv(write_digits_csv(tmp_path / "a.csv", x, None)).labels is None
    np.testing.assert_array_equal(parse_csv(write_digits_csv(tmp_path / "b.csv", x, y, "grid")).labels, y)


def test_label_column_need_not_come_first(tmp_path: Path) -> None:
    lines = _rows(3)
    moved = []
    for line in lines:
        cells = line.split(",")
        moved.append(",".join([*cells[1:], cells[0]]))
    got = parse_csv(_write(tmp_path / "t.csv", moved), require_label=True)
    np.testing.assert_array_equal(got.labels, parse_csv(_write(tmp_path / "u.csv", lines)).labels)


def test_crlf_bom_and_gzip_are_accepted(tmp_path: Path) -> None:
    lines = _rows(4)
    plain = parse_csv(_write(tmp_path / "plain.csv", lines), require_label=True)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    for p in (crlf, bom, gz):
        got = parse_csv(p, require_label=True)
        np.testing.assert_array_equal(got.images, plain.images)
        np.testing.assert_array_equal(got.labels, plain.labels)


def test_cache_is_reused_and_an_edited_csv_is_parsed_again(tmp_path: Path) -> None:
    x, y = synthetic_digits(30)
    path = write_digits_csv(tmp_path / "train.csv", x, y)
    first = load_csv(path, require_label=True)
    cached = cache_path(path)
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    again = load_csv(path, require_label=True)
    assert cached.stat().st_mtime_ns == stamp  # served from the cache, not rewritten
    np.testing.assert_array_equal(first.images, again.images)
    # Edit one pixel, keeping the file size the same.
    text = path.read_text().splitlines()
    cells = text[1].split(",")
    cells[5] = "9" if cells[5] != "9" else "8"
    text[1] = ",".join(cells)
    time.sleep(0.01)
    path.write_text("\n".join(text) + "\n")
    edited = load_csv(path, require_label=True)
    assert edited.images.reshape(30, -1)[0, 4] == int(cells[5])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=st.integers(0, 199), col=st.integers(1, 784), value=st.integers(0, 255))
def test_a_cache_stands_for_the_exact_bytes_whatever_keeps_the_size_and_mtime(
    tmp_path_factory: pytest.TempPathFactory, row: int, col: int, value: int
) -> None:
    """Any one cell edited, anywhere in a file far longer than its two ends, to a value of the same width, with the
    file's mtime put back: the run reads the new value, as the fingerprint's sha256 says the data changed."""
    import os

    tmp = tmp_path_factory.mktemp("edit")
    x, y = synthetic_digits(200)
    path = write_digits_csv(tmp / "train.csv", x, y)
    load_csv(path, require_label=True)
    lines = path.read_text().splitlines()
    cells = lines[1 + row].split(",")
    width = len(cells[col])  # a value of the same number of digits keeps the file's size
    new = str({1: value % 10, 2: 10 + value % 90, 3: 100 + value % 156}[width])
    if int(new) == int(cells[col]):
        return
    cells[col] = new
    lines[1 + row] = ",".join(cells)
    before = os.stat(path)
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert load_csv(path, require_label=True).images.reshape(200, -1)[row, col - 1] == int(new)


def test_a_broken_cache_file_is_rebuilt(tmp_path: Path) -> None:
    x, y = synthetic_digits(10)
    path = write_digits_csv(tmp_path / "train.csv", x, y)
    load_csv(path)
    cache_path(path).write_bytes(b"garbage")
    np.testing.assert_array_equal(load_csv(path).images.reshape(10, -1), x)


def _cell(lines: list[str], row: int, col: int, value: str) -> list[str]:
    """Replace the cell at file line `row` (1-based, header = 1) and column index col."""
    out = list(lines)
    cells = out[row - 1].split(",")
    cells[col] = value
    out[row - 1] = ",".join(cells)
    return out


BAD_CASES = {
    "empty file": (lambda L: [], None, None, "empty"),
    "header only": (lambda L: L[:1], None, None, "no data rows"),
    "short row": (lambda L: [*L[:2], ",".join(L[2].split(",")[:-1]), *L[3:]], 3, None, "785"),
    "long row": (lambda L: [*L[:3], L[3] + ",7", *L[4:]], 4, None, "786 fields"),
    "non-numeric cell": (lambda L: _cell(L, 4, 11, "abc"), 4, "pixel10", "'abc' is not an integer"),
    "empty cell": (lambda L: _cell(L, 4, 11, ""), 4, "pixel10", "empty cell"),
    "float cell": (lambda L: _cell(L, 2, 1, "0.5"), 2, "pixel0", "not an integer"),
    "pixel above 255": (lambda L: _cell(L, 5, 300, "256"), 5, "pixel299", "outside 0-255"),
    "negative pixel": (lambda L: _cell(L, 3, 2, "-1"), 3, "pixel1", "outside 0-255"),
    "label outside 0-9": (lambda L: _cell(L, 3, 0, "10"), 3, "label", "outside 0-9"),
    "no label column": (lambda L: [",".join(r.split(",")[1:]) for r in L], 1, None, "no 'label' column"),
    "783 pixels": (lambda L: [",".join(r.split(",")[:-1]) for r in L], 1, None, "783 pixel columns"),
    "renamed column": (lambda L: _cell(L, 1, 7, "foo"), 1, "foo", "expected 'pixel6'"),
    "headerless": (lambda L: L[1:], 1, None, "no header"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_train_csv_names_file_row_and_column(tmp_path: Path, case: str) -> None:
    edit, row, column, text = BAD_CASES[case]
    path = tmp_path / "train.csv"
    lines = edit(_rows(6))
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(UserError) as info:
        load_csv(path, require_label=True)
    err = info.value
    assert err.file == str(path)
    assert err.row == row, str(err)
    assert err.column == column, str(err)
    assert text in str(err)
    assert "\n" not in str(err)
    assert not cache_path(path).exists()  # nothing cached for a bad file


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    p = tmp_path / "train.csv"
    p.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError, match="binary"):
        parse_csv(p)
    p.write_bytes(b"label,pixel0\n\xff\xfe\xfa" + b"1" * 100)
    with pytest.raises(UserError, match=r"UTF-8|binary"):
        parse_csv(p)
    g = tmp_path / "train.csv.gz"
    g.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot be read"):
        parse_csv(g)


def test_grid_header_rows_are_read_row_major(tmp_path: Path) -> None:
    image = np.zeros((1, 784), np.uint8)
    image[0, GRID_COLUMNS.index("3x5")] = 200  # row 3, column 5 (1-based)
    got = parse_csv(write_digits_csv(tmp_path / "t.csv", image, np.array([1]), "grid"))
    assert got.images[0, 2, 4] == 200 and got.images.sum() == 200


def test_a_read_only_data_folder_caches_in_the_user_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from digits.data import csv as csv_module

    folder = make_folder(tmp_path / "ro", n_train=20, test=None)
    real = np.savez

    def read_only_folder(file: object, *args: object, **kwargs: object) -> None:
        if Path(str(file)).parent == folder:
            raise PermissionError(30, "Read-only file system")
        real(file, *args, **kwargs)

    monkeypatch.setattr(np, "savez", read_only_folder)
    first = load_csv(folder / "train.csv", require_label=True)
    assert not cache_path(folder / "train.csv").exists()
    assert csv_module.user_cache_path(folder / "train.csv").is_file()
    parses = []
    monkeypatch.setattr(csv_module, "parse_csv", lambda *a, **k: parses.append(a))
    again = load_csv(folder / "train.csv", require_label=True)  # from the user cache: no parse
    assert parses == [] and np.array_equal(first.images, again.images)


def test_an_unwritable_cache_only_costs_a_reparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_folder(tmp_path / "ro", n_train=20, test=None)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(np, "savez", refuse)
    assert len(load_csv(folder / "train.csv")) == 20
    assert not cache_path(folder / "train.csv").exists()
    assert not list(folder.glob("*.tmp*"))


def test_ensure_cached_parses_only_a_stale_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from digits.data import csv as csv_module

    x, y = synthetic_digits(10)
    path = write_digits_csv(tmp_path / "train.csv", x, y)
    csv_module.ensure_cached(path, require_label=True)
    assert cache_path(path).is_file()
    parses = []
    monkeypatch.setattr(csv_module, "parse_csv", lambda *a, **k: parses.append(a) or parse_csv(*a, **k))
    csv_module.ensure_cached(path, require_label=True)
    assert parses == []  # fresh: neither parsed nor loaded
    time.sleep(0.01)
    write_digits_csv(path, x[:5], y[:5])
    csv_module.ensure_cached(path, require_label=True)
    assert len(parses) == 1 and len(load_csv(path)) == 5


def test_a_value_after_the_last_pixel_on_every_row_is_an_error(tmp_path: Path) -> None:
    """pandas would take such a file's first column as its index: labels from pixel0, every pixel shifted."""
    lines = _rows(6)
    path = _write(tmp_path / "train.csv", [lines[0], *(row + ",0" for row in lines[1:])])
    with pytest.raises(UserError, match="786 fields, expected 785") as info:
        load_csv(path, require_label=True)
    assert info.value.row == 2


@given(st.lists(st.sampled_from([-2, -1, 0, 0, 0, 1, 2]), min_size=4, max_size=4), st.booleans())
@settings(max_examples=60, deadline=None)
def test_any_row_whose_field_count_differs_from_the_header_is_named(deltas: list[int], crlf: bool) -> None:
    lines = _rows(4)
    rows = []
    for row, d in zip(lines[1:], deltas):
        cells = row.split(",")
        rows.append(",".join(cells[: len(cells) + d] if d < 0 else cells + ["0"] * d))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.csv"
        path.write_text(("\r\n" if crlf else "\n").join([lines[0], *rows]) + "\n")
        if all(d == 0 for d in deltas):
            assert len(parse_csv(path, require_label=True)) == 4
            return
        with pytest.raises(UserError, match="fields, expected 785") as info:
            parse_csv(path, require_label=True)
        assert info.value.row == 2 + next(i for i, d in enumerate(deltas) if d != 0)


@pytest.mark.parametrize("cell", ["1e2", "9.0", "0x1f", "1_0", "\u00a05", "\u0665"])
def test_one_grammar_for_a_cell_integers_only(tmp_path: Path, cell: str) -> None:
    lines = _cell(_rows(30), 4, 12, cell)
    lines = _cell(lines, 22, 40, "300")  # a later error must not be what is reported
    with pytest.raises(UserError, match="is not an integer") as info:
        parse_csv(_write(tmp_path / "train.csv", lines), require_label=True)
    assert (info.value.row, info.value.column) == (4, "pixel11")


def test_quoted_headers_and_cells_as_r_writes_them(tmp_path: Path) -> None:
    lines = _rows(5)
    quoted = [",".join(f'"{c}"' for c in line.split(",")) for line in lines]
    assert len(quoted[0]) > 8192  # longer than any fixed-size peek at the header
    got = parse_csv(_write(tmp_path / "r.csv", quoted), require_label=True)
    want = parse_csv(_write(tmp_path / "plain.csv", lines), require_label=True)
    assert np.array_equal(got.images, want.images) and np.array_equal(got.labels, want.labels)


@pytest.mark.parametrize("ending", ["\r", "\r\n"])
def test_errors_keep_their_line_and_column_with_any_line_ending(tmp_path: Path, ending: str) -> None:
    lines = _cell(_rows(6), 5, 3, "abc")
    path = tmp_path / "train.csv"
    path.write_text(ending.join(lines) + ending, newline="")
    with pytest.raises(UserError, match="'abc' is not an integer") as info:
        parse_csv(path, require_label=True)
    assert (info.value.row, info.value.column) == (5, "pixel2")
    ok = tmp_path / "ok.csv"
    ok.write_text(ending.join(_rows(6)) + ending, newline="")
    assert len(parse_csv(ok, require_label=True)) == 6
