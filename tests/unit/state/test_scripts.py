"""The Lua scripts of visionq.state: each documents its arguments, spells no key, is used,
and ships in the package."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

STATE = Path(__file__).resolve().parents[3] / "visionq" / "state"
LUA = STATE / "lua"
SCRIPTS = sorted(p for p in LUA.rglob("*.lua") if p.parent.name != "lib")
_ARGUMENT = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.[^\]]*)?\] = \S")


def _name(path: Path) -> str:
    return path.relative_to(LUA).with_suffix("").as_posix()


@pytest.mark.parametrize("path", SCRIPTS, ids=_name)
def test_a_script_begins_with_one_line_per_argument(path: Path) -> None:
    lines = path.read_text().splitlines()
    arguments = []
    for line in lines:
        match = _ARGUMENT.match(line)
        if match is None:
            break
        arguments.append(line)
    assert arguments, f"{path.name} does not begin with its KEYS/ARGV lines"
    used = set(re.findall(r"\b(KEYS|ARGV)\[(\d+)", "\n".join(lines[len(arguments) :])))
    documented = {(m.group(1), m.group(2)) for m in map(_ARGUMENT.match, arguments) if m}
    ranged = {m.group(1) for m in map(_ARGUMENT.match, arguments) if m and m.group(3)}
    assert {u for u in used if u[0] not in ranged} <= documented, path.name


@pytest.mark.parametrize("path", sorted(LUA.rglob("*.lua")), ids=_name)
def test_no_key_is_spelled_in_lua(path: Path) -> None:
    assert "vq:" not in path.read_text()


def test_every_script_is_used_by_a_module() -> None:
    source = "\n".join(p.read_text() for p in STATE.glob("*.py"))
    for path in LUA.rglob("*.lua"):
        name = _name(path)
        used = f'"{name}"' if path.parent.name != "lib" else f'library="{path.stem}"'
        assert used in source, f"{name}.lua is not loaded by any module"


def test_every_script_ships_in_the_package() -> None:
    pyproject = tomllib.loads((STATE.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["visionq.state"]
    for path in LUA.rglob("*.lua"):
        relative = path.relative_to(STATE).as_posix()
        assert any(
            fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns
        ), relative
