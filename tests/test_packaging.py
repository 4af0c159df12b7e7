"""The installable package (issue 10 item 8): metadata that matches the pinned requirements, a console script,
data folders found inside an installed package. (.ci/check_installed builds the wheel and runs it for real.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import mmembed.config as config

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-r")]


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_dependencies_are_the_pinned_requirements():
    project = _pyproject()["project"]
    assert sorted(project["dependencies"]) == sorted(_requirements(ROOT / "requirements.txt"))
    assert sorted(project["optional-dependencies"]["dev"]) == sorted(_requirements(ROOT / "requirements-dev.txt"))
    assert "train" in project["optional-dependencies"]


def test_console_script_and_build_system():
    data = _pyproject()
    assert data["project"]["scripts"] == {"mmembed": "mmembed.cli:main"}
    assert data["build-system"]["build-backend"] == "hatchling.build"
    wheel = data["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["mmembed"]
    # the top-level data folders ride inside the package, where config._data_dir looks first
    assert wheel["force-include"] == {"assets": "mmembed/_data/assets", "sample_corpus": "mmembed/_data/sample_corpus"}


def test_every_runtime_import_is_a_declared_dependency():
    """A third-party module imported under mmembed/ must come from a declared distribution."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    provided = packages_distributions()
    optional = {"spaces"}  # Hugging Face ZeroGPU: only present on a Space, imported behind a guard
    missing = set()
    for path in (ROOT / "mmembed").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in {"mmembed", "__future__"} or top in optional:
                    continue
                dists = {_name(d) for d in provided.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, sorted(missing)


def test_data_folders_prefer_the_installed_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PACKAGE_DIR", tmp_path / "site" / "mmembed")
    monkeypatch.setattr(config, "PROJECT_DIR", tmp_path / "checkout")
    assert config._data_dir("assets") == tmp_path / "checkout" / "assets"
    (tmp_path / "site" / "mmembed" / "_data" / "assets").mkdir(parents=True)
    assert config._data_dir("assets") == tmp_path / "site" / "mmembed" / "_data" / "assets"


def test_shipped_data_is_found_in_this_checkout():
    assert (config.ASSETS_DIR / "mmembed-mini" / "config.json").is_file()
    assert (config.SAMPLE_CORPUS_DIR / "corpus.jsonl").is_file()


def test_every_benchmark_has_a_smoke_mode_and_imports_no_test_code():
    """CI runs `python -m benchmarks.smoke`: each benchmark needs --smoke; none may reach into tests/ or edit
    sys.path (they run as modules of a checkout or against the installed package)."""
    import ast

    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    assert scripts
    for path in scripts:
        text = path.read_text()
        assert '"--smoke"' in text, f"{path.name} has no --smoke mode"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                raise AssertionError(f"{path.name}:{node.lineno} touches sys.path")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                test_modules = {"tests", "fakes", "retrieval_helpers", "ui_helpers"}
                assert not any(n.split(".")[0] in test_modules for n in names), f"{path.name}:{node.lineno}"
