"""CSV parsing, the embedded MNIST source, device-resident batches and the DataModule.

The DataModule (and with it Lightning, ~5 s to import) loads on first use, so checking a data folder costs no more
than pandas.
"""

from typing import TYPE_CHECKING, Any

from digits.data.csv import DigitArrays, load_csv, parse_csv

if TYPE_CHECKING:
    from digits.data.datamodule import DigitsDataModule, stratified_split

__all__ = ["DigitArrays", "DigitsDataModule", "load_csv", "parse_csv", "stratified_split"]


def __getattr__(name: str) -> Any:
    if name in ("DigitsDataModule", "stratified_split"):
        from digits.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'digits.data' has no attribute {name!r}")
