"""The layout tells the architecture, and stays that way: no module imports another module's
private (underscore) names, built-in plugins only register, the pipeline-file package does not
import the Python API, and every plugin package is laid out alike."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "core" / "pipectl"
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
FIRST_PARTY = ("pipectl", "pipectl_dask", "pipectl_http", "pipectl_postgres")


def _sources() -> list[Path]:
    files = sorted(KERNEL.rglob("*.py"))
    for plugin in PLUGINS:
        files.extend(sorted((plugin / "src").rglob("*.py")))
    return files


def _private_imports(path: Path) -> list[str]:
    """``from pipectl.x import _name`` (and ``import pipectl.x._y``) in ``path``: a private
    name of another module. ``__version__``-style dunders are public."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if not node.module.startswith(FIRST_PARTY):
                continue
            parts = node.module.split(".")
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{p}"
                for p in parts
                if p.startswith("_") and not p.startswith("__")
            ]
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(FIRST_PARTY) and any(
                    p.startswith("_") and not p.startswith("__") for p in alias.name.split(".")
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name}")
    return found


@pytest.mark.slow
def test_no_module_imports_another_modules_private_names():
    found = [hit for path in _sources() for hit in _private_imports(path)]
    assert not found, "make these names public (or keep them in one module):\n" + "\n".join(found)


def test_the_private_import_check_finds_one(tmp_path):
    """The check above cannot pass vacuously."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from pipectl.preview import _hidden, shown\nimport pipectl._x\n", encoding="utf-8"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _private_imports(bad) == [
            "bad.py:1: pipectl.preview._hidden",
            "bad.py:2: pipectl._x",
        ]
    finally:
        ROOT = saved


def _module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_pipeline_file_package_does_not_import_the_python_api():
    for path in sorted((KERNEL / "files").rglob("*.py")):
        imported = _module_imports(path)
        assert not {
            n for n in imported if n == "pipectl.pipeline" or n.startswith("pipectl.pipeline.")
        }, path


@pytest.mark.parametrize("path", sorted((KERNEL / "builtins").glob("*.py")), ids=lambda p: p.name)
def test_builtins_only_register(path):
    """A built-in plugin module defines hook implementations and the small factories they
    register, and imports its components lazily: no class of its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert not classes, f"{path.name}: move {classes} to pipectl/components/"
    for node in tree.body:  # top-level imports of components would load them at start-up
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith("pipectl.components"), (
                f"{path.name}:{node.lineno}: import {node.module} inside the factory"
            )


def test_every_plugin_package_is_laid_out_alike():
    shapes = {}
    for plugin in PLUGINS:
        data = tomllib.loads((plugin / "pyproject.toml").read_text(encoding="utf-8"))
        package = plugin.name.replace("-", "_")
        assert (plugin / "src" / package / "__init__.py").exists(), plugin.name
        assert (plugin / "src" / package / "py.typed").exists(), plugin.name
        for name in ("README.md", "CHANGELOG.md", "tests"):
            assert (plugin / name).exists(), f"{plugin.name}: no {name}"
        assert "pipectl>=0.1.0,<0.2" in data["project"]["dependencies"], plugin.name
        assert data["project"]["entry-points"]["pipectl"], plugin.name
        shapes[plugin.name] = (
            data["build-system"]["build-backend"],
            tuple(sorted(data["build-system"]["requires"])),
            tuple(data["tool"]["setuptools"]["packages"]["find"]["where"]),
            tuple(sorted(data["project"].get("dynamic", []))),
        )
    assert len(set(shapes.values())) == 1, shapes
