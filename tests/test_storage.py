"""storage.atomic_write: the one writer every file mmembed puts on disk goes through."""

from __future__ import annotations

import ast
import stat
from pathlib import Path

import pytest

from mmembed.storage import atomic_copy, atomic_write, atomic_write_json, atomic_write_text, read_json

ROOT = Path(__file__).resolve().parent.parent


def test_write_replaces_the_target_with_the_requested_mode(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    assert target.read_text() == "one" and stat.S_IMODE(target.stat().st_mode) == 0o644
    atomic_write_text(target, "two", mode=0o600)
    assert target.read_text() == "two" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"b": 1, "a": 2})
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # sorted by default

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert read_json(target) == {"a": 2, "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_copy_and_unsorted_json(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"\x00\x01")
    atomic_copy(source, tmp_path / "out" / "dst.bin")
    assert (tmp_path / "out" / "dst.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "u.json", {"b": 1, "a": 2}, sort_keys=False)
    assert list(read_json(tmp_path / "u.json")) == ["b", "a"]


def test_no_module_hand_writes_temp_file_and_rename():
    """Everything under mmembed/, benchmarks/ and scripts/ writes through mmembed.storage."""
    offenders = []
    for path in [*ROOT.glob("mmembed/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")]:
        if path.name == "storage.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"mkstemp", "replace", "rename"} and \
                    isinstance(node.value, ast.Name) and node.value.id in {"os", "tempfile"}:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert offenders == []
