"""What the bench scripts share: /proc readers, child processes, the daemon, metrics text, `check`.

Imported as `bench.common`; a script run as `python bench/NAME.py` puts the
repository root on `sys.path` first (as bench/store_bench.py does).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

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


def stat_cpu(stat_path: str) -> float:
    """User + system CPU seconds from a /proc stat file (a process's or one thread's)."""
    with open(stat_path) as stat:
        # Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (/proc/<pid>/stat)."""
    return stat_cpu(f"/proc/{pid}/stat")


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


class Child:
    """A helper process that prints `listening on URL` first; later lines go to `on_line`.

    Started by the constructor, which raises BenchError when the first line is
    not `listening on ...` within 60 s; a subclass sets what `on_line` uses
    before calling it. Also a context manager that stops the process on exit.
    """

    def __init__(self, cmd: Sequence[str], what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, text=True)
        self._first: queue.Queue[str | None] = queue.Queue()
        # Every line is read: a child blocked on a full pipe would stall the bench.
        threading.Thread(target=self._drain, name=f"{what}-stdout", daemon=True).start()
        try:
            first = self._first.get(timeout=60)
        except queue.Empty:
            first = None
        if first is None or not first.startswith("listening on "):
            self.stop()
            raise BenchError(f"the {what} did not start (first line: {first!r})")
        self.url = first.removeprefix("listening on ").strip()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        first = True
        for line in self.proc.stdout:
            if first:
                self._first.put(line)
                first = False
            else:
                self.on_line(line)
        self._first.put(None)

    def on_line(self, line: str) -> None:
        """One line after the first (ignored unless a subclass reads them)."""

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def cpu(self) -> float:
        """User + system CPU seconds the child has used so far."""
        return proc_cpu(self.proc.pid)

    def check_alive(self) -> None:
        """Raise BenchError if the process has exited."""
        if self.proc.poll() is not None:
            raise BenchError(f"the {self.what} exited with {self.proc.returncode}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after 10 s)."""
        stop_process(self.proc, 10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Daemon:
    """`python -m watcher run -c CONFIG` in a child process; its log goes to a file."""

    def __init__(self, config: Path, log: Path, grace: float = 15) -> None:
        self.log = log
        self.grace = grace
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [PY, "-m", "watcher", "--log-level", "WARNING", "run", "-c", str(config)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_PROXY": "127.0.0.1"},
        )

    def cpu(self) -> float:
        """User + system CPU seconds the daemon has used so far."""
        return proc_cpu(self.proc.pid)

    def rss(self) -> float:
        """The daemon's resident set size now, in MiB."""
        return proc_rss_mib(self.proc.pid)

    def check_alive(self) -> None:
        """Raise BenchError, with the log's tail, if the daemon has exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text()[-2000:]
            raise BenchError(f"the daemon exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after `grace` seconds; close the log."""
        stop_process(self.proc, self.grace)
        self._log_file.close()
