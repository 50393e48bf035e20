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


# The flow, bottom to top: a package imports only packages on a lower layer (and
# itself). Data flows poll -> intake -> store -> delivery -> notifiers; the daemon
# wires them; the commands drive the daemon; `core` is pure and imports nothing.
LAYERS = {
    "core": 0,
    "config": 1,
    "store": 1,
    "poll": 1,
    "notifiers": 1,
    "ops": 1,
    "intake": 2,
    "delivery": 2,
    "testing": 2,
    "daemon": 3,
    "commands": 4,
    "__main__": 5,
}


def package_of(path: Path) -> str:
    """The top-level part of `watcher` a file belongs to (`daemon`, `store`, ...)."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


ALL_FILES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__")


def test_every_part_has_a_layer() -> None:
    """Every subpackage of `watcher` is placed on a layer (a new one must be placed)."""
    assert {package_of(p) for p in ALL_FILES} <= set(LAYERS)


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(PACKAGE)) for p in ALL_FILES])
def test_nothing_imports_upward(path: Path) -> None:
    """A module imports only its own part and parts on a lower layer of the flow."""
    own = package_of(path)
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] != "watcher" or len(parts) < 2 or parts[1] == own:
            continue
        if parts[1] == "testing" and path.name == "demo.py":
            continue  # the demo command runs the simulator (checked below)
        assert LAYERS[parts[1]] < LAYERS[own], (
            f"{path.relative_to(PACKAGE)} ({own}, layer {LAYERS[own]}) imports {name}"
            f" (layer {LAYERS[parts[1]]})"
        )


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
        assert "watcher.commands.demo" not in top_level_imports_of(path), (
            f"{path.relative_to(PACKAGE)} imports watcher.commands.demo at module level"
        )


def test_the_test_doubles_do_not_import_the_daemon() -> None:
    """The simulator and fakes stand alone: they import no daemon, delivery or CLI module."""
    for path in sorted((PACKAGE / "testing").glob("*.py")):
        for name in imports_of(path):
            assert name.split(".")[:2] not in (
                ["watcher", "daemon"],
                ["watcher", "commands"],
                ["watcher", "delivery"],
            ), f"testing/{path.name} imports {name}"
