"""CSV parsing, the embedded MNIST source, device-resident batches and the DataModule."""

from digits.data.csv import DigitArrays, load_csv, parse_csv
from digits.data.datamodule import DigitsDataModule, stratified_split

__all__ = ["DigitArrays", "DigitsDataModule", "load_csv", "parse_csv", "stratified_split"]
