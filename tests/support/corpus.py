"""Where the image corpus is, and its files as data URLs."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path


def find_corpus() -> Path:
    """shared/corpus sits beside the project's checkout, or, for a clone of a local
    checkout (`git clone . /tmp/fresh`), beside the checkout it was cloned from;
    `VISIONQ_CORPUS` names it anywhere else."""
    if named := os.environ.get("VISIONQ_CORPUS"):
        return Path(named).resolve()
    root = Path(__file__).resolve().parents[2]
    origin = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    beside = [root.parent]
    if origin and Path(origin).is_dir():
        beside.append(Path(origin).resolve().parent)
    found = [d / "shared" / "corpus" for d in beside if (d / "shared" / "corpus").is_dir()]
    return found[0] if found else root.parent / "shared" / "corpus"


CORPUS = find_corpus()


def data_url(path: Path, mime: str | None = None) -> str:
    """The file as a base64 data URL, its MIME type taken from its suffix unless given."""
    mime = mime or "image/" + {"jpg": "jpeg"}.get(path.suffix[1:], path.suffix[1:])
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
