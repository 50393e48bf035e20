"""The direction of dependencies: the core imports nothing from the shell."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "watcher"
CORE_ALLOWED_THIRD_PARTY: set[str] = set()
SHELL_ONLY = {
    "anyio",
    "httpx",
    "apscheduler",
    "slack_sdk",
    "aiohttp",
    "yaml",
    "sqlite3",
    "socket",
    "threading",
    "asyncio",
    "os",
    "time",
    "subprocess",
    "logging",
}


def imports_of(path: Path) -> set[str]:
    """Top-level module names (and watcher submodules) a file imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


CORE_FILES = sorted((PACKAGE / "core").glob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=[p.name for p in CORE_FILES])
def test_core_imports_only_core_and_pure_stdlib(path: Path) -> None:
    """Core modules import only `watcher.core.*` and stdlib modules free of I/O."""
    for name in imports_of(path):
        if name.startswith("watcher"):
            assert name.startswith("watcher.core"), f"{path.name} imports shell module {name}"
        assert name.split(".")[0] not in SHELL_ONLY, f"{path.name} imports {name} (I/O)"


def test_nothing_imports_the_composition_root() -> None:
    """Only the CLI and the demo may import the daemon (nothing imports upward)."""
    for path in PACKAGE.rglob("*.py"):
        if path.name in {"cli.py", "demo.py", "daemon.py"}:
            continue
        assert "watcher.daemon" not in imports_of(path), f"{path} imports watcher.daemon"
        assert "watcher.cli" not in imports_of(path) or path.name == "__main__.py"


PRODUCT_FILES = sorted(
    p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts
)


def top_level_imports_of(path: Path) -> set[str]:
    """Module names imported at module level (not inside a function or class body)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    "path", PRODUCT_FILES, ids=[str(p.relative_to(PACKAGE)) for p in PRODUCT_FILES]
)
def test_product_modules_do_not_import_the_test_doubles(path: Path) -> None:
    """No product module imports `watcher.testing`, except the demo command."""
    if path.name == "demo.py":
        return
    testing = {n for n in imports_of(path) if n.split(".")[:2] == ["watcher", "testing"]}
    assert not testing, f"{path.relative_to(PACKAGE)} imports {sorted(testing)}"


def test_demo_is_imported_only_when_the_demo_runs() -> None:
    """Modules that import the demo command do so inside a function, never at import time."""
    for path in PRODUCT_FILES:
        if path.name == "demo.py":
            continue
        assert "watcher.demo" not in top_level_imports_of(path), (
            f"{path.relative_to(PACKAGE)} imports watcher.demo at module level"
        )


def test_the_test_doubles_do_not_import_the_daemon() -> None:
    """The simulator and fakes stand alone: they import no daemon, delivery or CLI module."""
    for path in sorted((PACKAGE / "testing").glob("*.py")):
        for name in imports_of(path):
            assert name not in {"watcher.daemon", "watcher.cli", "watcher.delivery"}, (
                f"testing/{path.name} imports {name}"
            )
