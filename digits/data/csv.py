"""Reading digit CSVs into uint8 arrays, with one-line errors that point at the bad cell, and a parse cache.

Two header styles are accepted: Kaggle's `label,pixel0..pixel783` and the other common MNIST dump's
`label,1x1,...,28x28` (row x column, 1-based, row-major). The label column is optional in test files.

The fast path is one pandas call with explicit dtypes. Only when it fails, or the values are out of range, does a
slow line-by-line pass run to find the exact row and column, so a valid file never pays for diagnostics.
"""

from __future__ import annotations

import contextlib
import csv as _csv
import gzip
import hashlib
import io
import logging
import os
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from digits.cache import user_cache_dir
from digits.errors import UserError

log = logging.getLogger(__name__)

SIDE = 28
PIXELS = SIDE * SIDE
KAGGLE_COLUMNS = [f"pixel{i}" for i in range(PIXELS)]
GRID_COLUMNS = [f"{r}x{c}" for r in range(1, SIDE + 1) for c in range(1, SIDE + 1)]
EXPECTED_HEADER = "'label,pixel0,...,pixel783' or 'label,1x1,...,28x28'"
CACHE_VERSION = 2


@dataclass(frozen=True)
class DigitArrays:
    """Images as uint8 [N, 28, 28] and labels as int64 [N] (None for an unlabelled file)."""

    images: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images)


def find_csv(directory: Path, stem: str) -> Path | None:
    """`stem.csv`, else `stem.csv.gz`, in directory; None if neither exists."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def data_files(directory: str | Path) -> tuple[Path, Path | None]:
    """The folder's train.csv (required) and test.csv (optional), each possibly gzipped."""
    directory = Path(directory)
    if directory.is_file():
        raise UserError("is a file; data.dir takes the folder that holds train.csv (and test.csv)", directory)
    if not directory.is_dir():
        raise UserError("data folder does not exist (expected a folder holding train.csv)", directory)
    train = find_csv(directory, "train")
    if train is None:
        raise UserError("no train.csv (or train.csv.gz) in the data folder", directory)
    return train, find_csv(directory, "test")


_CHECKED: dict[Path, tuple[int, int]] = {}  # CSVs this process has checked, by (size, mtime): checked once a run


def check_folder(directory: str | Path) -> None:
    """Parse both CSVs into their caches (unless fresh): every data error surfaces here, before any model exists.

    The arrays themselves are loaded once, later, by whoever needs them (DigitsDataModule.setup)."""
    train, test = data_files(directory)
    for path, labelled in ((train, True), (test, False)):
        if path is None:
            continue
        st = path.stat()
        if _CHECKED.get(path.resolve()) != (st.st_size, st.st_mtime_ns):
            ensure_cached(path, require_label=labelled)
            _CHECKED[path.resolve()] = (st.st_size, st.st_mtime_ns)


MAX_HEADER_BYTES = 1 << 20  # a 785-column header is ~7-10 kB, quoted or not; a first line past 1 MiB is not one


def _head_bytes(path: Path, n: int = MAX_HEADER_BYTES) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read(n)
        with open(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; a corrupt stream, zlib's
        raise UserError(f"cannot be read: {e}", path) from None


def _check_text(path: Path) -> str:
    """Reject binary files and empty files up front; return the header line (however long: R quotes every name)."""
    head = _head_bytes(path)
    if not head.strip():
        raise UserError("file is empty (expected a CSV with header " + EXPECTED_HEADER + ")", path)
    end = min((i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0), default=len(head))
    first = head[:end]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError("is UTF-16 text; save it as UTF-8 (or plain ASCII) CSV", path)
    if b"\x00" in head[: max(end, 8192)]:
        raise UserError("is a binary file, not a CSV text file", path)
    try:
        return first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError("is not UTF-8 text (a binary file?), expected a CSV", path, 1) from None


def _parse_header(path: Path, header_line: str, require_label: bool) -> tuple[list[str], int | None]:
    """Return the column names and the position of the label column; raise on anything but the two schemes."""
    columns = [c.strip().strip('"').strip() for c in next(_csv.reader([header_line]))]
    if all(_is_int(c) for c in columns if c):
        raise UserError(f"has no header row (first line is data); expected header {EXPECTED_HEADER}", path, 1)
    label_at = columns.index("label") if "label" in columns else None
    if require_label and label_at is None:
        raise UserError(f"no 'label' column; expected header {EXPECTED_HEADER}", path, 1)
    pixels = [c for i, c in enumerate(columns) if i != label_at]
    if len(pixels) != PIXELS:
        raise UserError(
            f"has {len(pixels)} pixel columns, expected {PIXELS} (a 28x28 image); header must be {EXPECTED_HEADER}",
            path,
            1,
        )
    scheme = KAGGLE_COLUMNS if pixels[0] == KAGGLE_COLUMNS[0] else GRID_COLUMNS
    for got, want in zip(pixels, scheme):
        if got != want:
            raise UserError(f"unexpected column name '{got}', expected '{want}' ({EXPECTED_HEADER})", path, 1, got)
    return columns, label_at


# What a cell may hold: an integer, ASCII digits with an optional sign, optionally quoted and padded with spaces.
# Python's int() and pandas' parser are both laxer ('1_0', non-ASCII digits, '1e2', '9.0'); neither is the judge.
_INT = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*", re.ASCII)
# Every byte a valid data region can hold; anything else (a letter, a '.', a non-breaking space) sends the file to
# the line-by-line diagnosis, so the fast path and the diagnosis accept exactly the same files.
_DATA_BYTES = b'0123456789,+-" \t\r\n'


def _is_int(text: str) -> bool:
    return _INT.fullmatch(text) is not None


def _raw_bytes(path: Path) -> bytes:
    try:
        return gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot be read: {e}", path) from None


def _diagnose(path: Path, columns: list[str], label_at: int | None) -> UserError | None:
    """Walk the file line by line and return an error for the first bad line or cell (None if all are fine).

    Works on raw bytes so that an encoding error or a NUL byte far into the file still gets its line number. Lines
    end at LF, CRLF or a lone CR, as they do for pandas.
    """
    n = len(columns)
    for line, raw in enumerate(_raw_bytes(path).splitlines(), start=1):
        if line == 1:
            continue  # the header was checked already
        if b"\x00" in raw:
            return UserError("NUL byte in line (binary data in a CSV)", path, line)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return UserError("line is not UTF-8 text", path, line)
        if not text.strip(" \t"):
            continue  # blank lines are skipped, as pandas does
        try:
            row = next(_csv.reader([text], strict=True), [])
        except _csv.Error as e:
            return UserError(f"malformed CSV line ({e})", path, line)
        if len(row) != n:
            return UserError(f"row has {len(row)} fields, expected {n} (one per header column)", path, line)
        for i, (name, cell) in enumerate(zip(columns, row)):
            bad = _bad_cell(cell, i == label_at)
            if bad:
                return UserError(bad, path, line, name)
    return None


def _bad_cell(cell: str, is_label: bool) -> str | None:
    text = cell.strip(" \t")
    if not text:
        return "empty cell, expected an integer"
    if not _is_int(text):
        shown = text[:20].encode("unicode_escape").decode("ascii")
        return f"'{shown}' is not an integer"
    v = int(text)
    shown = str(v) if len(str(v)) <= 20 else str(v)[:20] + "..."
    if is_label:
        return None if 0 <= v <= 9 else f"label {shown} is outside 0-9"
    return None if 0 <= v <= 255 else f"pixel value {shown} is outside 0-255"


def _fast_table(path: Path) -> np.ndarray:
    """One pandas call. A row with an extra field would make pandas take the first column as the index (and shift
    every value), so that is turned off and its warning made an error; bytes no integer cell can hold send the
    file to the diagnosis before pandas can read them its own way ('1e2' as 100)."""
    raw = _raw_bytes(path)
    ends = [i for i in (raw.find(b"\n"), raw.find(b"\r")) if i >= 0]
    body = raw[min(ends) + 1 :] if ends else b""
    if body.translate(None, _DATA_BYTES):
        raise ValueError("bytes outside the integer-CSV alphabet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        frame = pd.read_csv(
            io.BytesIO(raw),
            dtype=np.int32,
            engine="c",
            encoding="utf-8-sig",
            skip_blank_lines=True,
            index_col=False,
        )
    return frame.to_numpy(dtype=np.int32, copy=False)


def row_lines(path: str | Path) -> list[int]:
    """The file line number (from 1, the header's) of each data row: blank lines hold no row, so a table that
    names rows by line must skip them as the parser does."""
    lines = _raw_bytes(Path(path)).decode("utf-8-sig", errors="replace").splitlines()
    return [i for i, line in enumerate(lines[1:], 2) if line.strip()]


def parse_csv(path: str | Path, require_label: bool = False) -> DigitArrays:
    """Parse a digit CSV (no cache). Raise UserError naming the file, row and column on any problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", path)
    columns, label_at = _parse_header(path, _check_text(path), require_label)
    try:
        table = _fast_table(path)
    except UserError:
        raise
    except Exception as e:  # any failure of the fast path: find the exact line, or say what pandas said
        first = " ".join(str(e).split())[:200]
        raise _diagnose(path, columns, label_at) or UserError(f"cannot be parsed as CSV: {first}", path) from None
    if len(table) == 0:
        raise UserError("has a header but no data rows", path)
    if table.shape[1] != len(columns):
        raise _diagnose(path, columns, label_at) or UserError("rows do not match the header", path)
    pixel_idx = [i for i in range(len(columns)) if i != label_at]
    pixels = table[:, pixel_idx]
    labels = None if label_at is None else table[:, label_at]
    bad = pixels.min() < 0 or pixels.max() > 255 or (labels is not None and (labels.min() < 0 or labels.max() > 9))
    if bad:
        raise _diagnose(path, columns, label_at) or UserError("values out of range", path)
    images = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1, SIDE, SIDE)
    return DigitArrays(images, None if labels is None else labels.astype(np.int64))


def _cache_key(path: Path) -> str:
    """The CSV's sha256 (the fingerprint's, computed once per process): a cache stands for exactly the bytes it was
    parsed from, however the file was edited (an equal size and a restored mtime included)."""
    from digits.fingerprint import file_sha256

    return f"{CACHE_VERSION}:{file_sha256(path)}"


def cache_path(path: Path) -> Path:
    """The parse cache beside the CSV, where a second run looks first."""
    return path.with_name(f".{path.name}.cache.npz")


def user_cache_path(path: Path) -> Path:
    """Where the cache goes when the CSV's folder is read-only (Kaggle mounts its inputs so): one file per CSV path
    under $XDG_CACHE_HOME/digits (~/.cache/digits)."""
    root = user_cache_dir()
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return root / f"{path.name}.{digest}.cache.npz"


def _open_fresh_cache(path: Path, key: str, require_label: bool):  # -> NpzFile | None
    """The cache, opened, if one matches the CSV as it is now. An .npz reads a member only when it is accessed, so
    this costs the key, not the arrays."""
    for cached in (cache_path(path), user_cache_path(path)):
        if not cached.is_file():
            continue
        try:
            z = np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            continue  # a broken cache is rebuilt by the caller
        try:
            if str(z["key"]) == key and (bool(z["has_labels"]) or not require_label):
                return z
        except (OSError, ValueError, KeyError):
            pass
        z.close()
    return None


def _write_cache(path: Path, key: str, arrays: DigitArrays) -> None:
    """Beside the CSV if its folder is writable, else in the user's cache dir, else nowhere (a reparse next run)."""
    for cached in (cache_path(path), user_cache_path(path)):
        tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp.npz")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                tmp,
                key=np.array(key),
                images=arrays.images,
                labels=arrays.labels if arrays.labels is not None else np.zeros(0, np.int64),
                has_labels=np.array(arrays.labels is not None),
            )
            os.replace(tmp, cached)
            return
        except OSError as e:
            with contextlib.suppress(OSError):  # on a read-only mount even removing a file that is not there fails
                tmp.unlink()
            log.info("could not write parse cache %s (%s)", cached, e.strerror or e)
    log.warning("no parse cache could be written for %s; it will be parsed again next run", path)


def load_csv(path: str | Path, require_label: bool = False) -> DigitArrays:
    """Parse with a cache next to the CSV, so a second run's data set-up costs one np.load."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", path)
    key = _cache_key(path)
    z = _open_fresh_cache(path, key, require_label)
    if z is not None:
        with z:
            try:
                return DigitArrays(z["images"], z["labels"] if z["has_labels"] else None)
            except (OSError, ValueError, KeyError):
                pass  # a broken member: parse again below
    arrays = parse_csv(path, require_label)
    _write_cache(path, key, arrays)
    return arrays


def ensure_cached(path: str | Path, require_label: bool = False) -> None:
    """Parse into the cache unless it is fresh already; a fresh cache costs a stat and its key, not its arrays."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", path)
    z = _open_fresh_cache(path, _cache_key(path), require_label)
    if z is None:
        load_csv(path, require_label)
    else:
        z.close()
