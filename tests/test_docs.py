"""The front page and the docs stay true: every relative link and repository path in them exists, and every
`python -m digits.<tool>` command in their code blocks is accepted (training commands composed and checked with
`--cfg job`, which trains nothing; the other tools answer `--help`)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import ROOT, run_cli

PAGES = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_DIRS = ("conf/", "digits/", "docs/", "tests/", "results/", "benchmarks/", "notebooks/")


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def _links(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page: Path) -> None:
    for link in _links(page):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{_rel(page)}: link to {link}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{_rel(page)}: link to {link}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_repository_path_named_exists(page: Path) -> None:
    """`conf/experiment/best.yaml`, `digits/models/`, ...: a path in backquotes, spelled from the repository root
    and without placeholders, names something that is there."""
    for token in re.findall(r"`([^`\s]+)`", page.read_text()):
        if not token.startswith(TOP_DIRS) or re.search(r"[<>*{}$]", token):
            continue
        path = token.split(":", 1)[0].split("::", 1)[0]
        assert (ROOT / path).exists(), f"{_rel(page)}: {token}: no such path"


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith("python -m digits."):
                    out.append((_rel(page), shlex.split(line)[2:]))
    return out


COMMANDS = _commands()


def test_the_pages_have_commands_to_check() -> None:
    assert len(COMMANDS) >= 20 and {args[0] for _, args in COMMANDS} >= {"digits.train", "digits.predict"}


@pytest.mark.parametrize("page, args", COMMANDS, ids=[f"{p}: {' '.join(a)}"[:90] for p, a in COMMANDS])
def test_every_command_is_accepted(tmp_path: Path, page: str, args: list[str]) -> None:
    module, rest = args[0], args[1:]
    if module != "digits.train":
        proc = run_cli(["--help"], cwd=tmp_path, module=module, check=False)
        assert proc.returncode == 0, f"{page}: {module} --help: {proc.stderr[-500:]}"
        return
    proc = run_cli([*rest, "--cfg", "job"], cwd=tmp_path, check=False)
    if any(a.startswith("resume=") for a in rest):  # the run dir it names exists only on the writer's machine
        assert proc.returncode == 2 and "no such run dir to resume" in proc.stderr, proc.stderr[-500:]
        return
    assert proc.returncode == 0, f"{page}: {' '.join(args)}: {proc.stderr[-500:]}"
    assert not (tmp_path / "outputs").exists()  # checked, shown, nothing written
