"""What the bench scripts share: /proc readers, child processes, metrics text, `check`.

Imported as `bench.common`; a script run as `python bench/NAME.py` puts the
repository root on `sys.path` first (as bench/store_bench.py does).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark itself could not run (a process did not start, a wait timed out)."""


class Stopped(Exception):  # noqa: N818 - a signal, not a fault
    """SIGTERM or SIGINT: stop every process and end the run."""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as `name` -> sum over every series, plus `name{k="v"}` per series.

    Comments are skipped and values summed per name, so that
    `factory_watcher_polls_total` is every outcome together.
    """
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, rest = line.rpartition(" ")
        if not series:
            continue
        try:
            value = float(rest)
        except ValueError:
            continue
        name = series.split("{", 1)[0]
        found[name] = found.get(name, 0.0) + value
        if "{" in series:
            found[series] = value
    return found


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (/proc/<pid>/status VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the child binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGCONT (in case it is stopped), SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def config_accepted(config: Path) -> tuple[bool, str]:
    """Whether `factory-watcher check` accepts the config, and what it said."""
    done = subprocess.run(
        [PY, "-m", "watcher", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()
