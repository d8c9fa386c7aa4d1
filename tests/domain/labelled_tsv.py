"""Reading a labelled set: tab-separated rows, ``#`` comments, ``# part: NAME`` starting a part."""

from __future__ import annotations

from pathlib import Path


def labelled_rows(path: Path) -> list[tuple[str, list[str]]]:
    """Each row's part and fields, in file order."""
    rows = []
    part = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# part:"):
            part = line.removeprefix("# part:").split()[0]
        if not line.strip() or line.startswith("#"):
            continue
        rows.append((part, line.split("\t")))
    return rows
