"""Running `factory-watcher` in process, the way the command tests drive it."""

from __future__ import annotations

import io

from watcher.commands.cli import main


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `factory-watcher ARGS`; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()
