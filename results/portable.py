"""Rewrite a study's committed records so that they name no path of the machine they ran on, by the rules a run
now follows itself: a data folder as `digits.cache.portable` names it, a search's default storage as the study.db in
its sweep dir. Records written before those rules get the same form; nothing else in them changes.

    python results/portable.py results/<study> [DIGITS_DATA of the run] [--cwd DIR: the run's working directory]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml


def data_dir(recorded: str, digits_data: str | None, cwd: str | None = None) -> str:
    if digits_data and Path(recorded) == Path(digits_data) / "mnist":
        return "$DIGITS_DATA/mnist"
    if cwd and Path(recorded).is_relative_to(cwd):  # below the run's working directory: relative to it
        return str(Path(recorded).relative_to(cwd))
    return recorded


def storage(recorded: str, study: Path) -> str:
    """sqlite:///<abs>/study.db of the sweep dir itself -> the wording the sweeper now writes."""
    if (
        re.fullmatch(r"sqlite:////.*/study\.db", recorded)
        and Path(recorded[len("sqlite:///") :]).parent.name == study.name
    ):
        return "study.db in the sweep dir"
    return recorded


def main(study: Path, digits_data: str | None, cwd: str | None = None) -> None:
    for path in sorted(study.glob("*/metrics.json")):
        record = json.loads(path.read_text())
        if isinstance(record.get("data"), dict) and isinstance(record["data"].get("dir"), str):
            record["data"]["dir"] = data_dir(record["data"]["dir"], digits_data, cwd)
            path.write_text(json.dumps(record, indent=2) + "\n")
    search = study / "search.json"
    if search.is_file():
        out = json.loads(search.read_text())
        out["storage"] = storage(out["storage"], study)
        search.write_text(json.dumps(out, indent=2) + "\n")
    results = study / "optimization_results.yaml"
    if results.is_file():
        text = results.read_text()
        stored = yaml.safe_load(text)["storage"]
        results.write_text(text.replace(f"storage: {stored}", f"storage: {storage(stored, study)}"))


if __name__ == "__main__":
    args = sys.argv[1:]
    cwd = args[args.index("--cwd") + 1] if "--cwd" in args else None
    rest = [a for i, a in enumerate(args) if a != "--cwd" and (i == 0 or args[i - 1] != "--cwd")]
    main(Path(rest[0]), rest[1] if len(rest) > 1 else None, cwd)
