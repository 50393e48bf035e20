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
