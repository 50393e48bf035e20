"""The systemd units: required directives, `systemd-analyze verify` and `security`.

The directive tables are the contract with the daemon and the CLI (Type=notify,
exit 78 for a bad config, credentials by name, ...). The systemd-analyze tests
run the real systemd tools; they skip only where systemd-analyze is missing
(CI installs it through .ci/check-units).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_UNIT = ROOT / "systemd" / "factory-watcher.service"
USER_UNIT = ROOT / "systemd" / "factory-watcher-user.service"
CHECK_UNITS = ROOT / ".ci" / "check-units"

SYSTEM_EXE = "/opt/factory-watcher/venv/bin/factory-watcher"
USER_EXE = "%h/.local/share/factory-watcher/venv/bin/factory-watcher"
USER_EXE_IN_HOME = Path(".local/share/factory-watcher/venv/bin/factory-watcher")
MAX_EXPOSURE = 2.0

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value in file order (units repeat keys, so no configparser)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            # systemd joins a line ending in a backslash with the next one.
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a unit file line: {raw!r}"
        assert section is not None, f"assignment before any [section]: {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def system_unit() -> Unit:
    """The system unit as shipped."""
    return parse_unit(SYSTEM_UNIT.read_text())


@pytest.fixture(scope="module")
def user_unit() -> Unit:
    """The user unit as shipped."""
    return parse_unit(USER_UNIT.read_text())


# (section, key, every value in order) that both units must declare.
COMMON = [
    ("Service", "Type", ["notify"]),
    ("Service", "NotifyAccess", ["main"]),
    ("Service", "Restart", ["on-failure"]),
    ("Service", "RestartSec", ["5s"]),
    ("Service", "RestartPreventExitStatus", ["78"]),
    ("Service", "WatchdogSec", ["60s"]),
    ("Service", "TimeoutStopSec", ["30s"]),
    ("Service", "StateDirectory", ["factory-watcher"]),
    ("Service", "ConfigurationDirectory", ["factory-watcher"]),
    ("Service", "Environment", ["PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"]),
    ("Service", "UMask", ["0077"]),
    ("Service", "PrivateUsers", ["yes"]),
    ("Service", "CapabilityBoundingSet", [""]),
    ("Service", "AmbientCapabilities", [""]),
    ("Service", "NoNewPrivileges", ["yes"]),
    ("Service", "RestrictSUIDSGID", ["yes"]),
    ("Service", "KeyringMode", ["private"]),
    ("Service", "ProtectSystem", ["strict"]),
    ("Service", "PrivateTmp", ["yes"]),
    ("Service", "PrivateMounts", ["yes"]),
    ("Service", "PrivateDevices", ["yes"]),
    ("Service", "DevicePolicy", ["closed"]),
    ("Service", "ProtectKernelTunables", ["yes"]),
    ("Service", "ProtectKernelModules", ["yes"]),
    ("Service", "ProtectKernelLogs", ["yes"]),
    ("Service", "ProtectClock", ["yes"]),
    ("Service", "ProtectHostname", ["yes"]),
    ("Service", "PrivateIPC", ["yes"]),
    ("Service", "RestrictAddressFamilies", ["AF_INET AF_INET6 AF_UNIX"]),
    ("Service", "RestrictNamespaces", ["yes"]),
    ("Service", "RestrictRealtime", ["yes"]),
    ("Service", "LockPersonality", ["yes"]),
    ("Service", "MemoryDenyWriteExecute", ["yes"]),
    ("Service", "SystemCallArchitectures", ["native"]),
    ("Service", "SystemCallFilter", ["@system-service", "~@privileged @resources"]),
    ("Service", "SystemCallErrorNumber", ["EPERM"]),
    ("Unit", "StartLimitBurst", ["5"]),
]

SYSTEM_ONLY = [
    ("Unit", "Wants", ["network-online.target"]),
    ("Unit", "After", ["network-online.target"]),
    (
        "Service",
        "ExecStartPre",
        [f"{SYSTEM_EXE} check -c ${{CONFIGURATION_DIRECTORY}}/config.yaml"],
    ),
    ("Service", "ExecStart", [f"{SYSTEM_EXE} run -c ${{CONFIGURATION_DIRECTORY}}/config.yaml"]),
    (
        "Service",
        "ExecReload",
        [
            f"{SYSTEM_EXE} check -c ${{CONFIGURATION_DIRECTORY}}/config.yaml",
            "/bin/kill -HUP $MAINPID",
        ],
    ),
    ("Service", "DynamicUser", ["yes"]),
    ("Service", "ProtectHome", ["yes"]),
    ("Service", "ProtectProc", ["invisible"]),
    ("Service", "ProcSubset", ["pid"]),
    ("Service", "ProtectControlGroups", ["yes"]),
    ("Service", "RemoveIPC", ["yes"]),
    # The metrics endpoint's one socket (http.listen), and no other.
    ("Service", "SocketBindAllow", ["tcp:9464"]),
    ("Service", "SocketBindDeny", ["any"]),
    ("Install", "WantedBy", ["multi-user.target"]),
]

USER_ONLY = [
    ("Service", "ExecStartPre", [f"{USER_EXE} check -c %E/factory-watcher/config.yaml"]),
    ("Service", "ExecStart", [f"{USER_EXE} run -c %E/factory-watcher/config.yaml"]),
    (
        "Service",
        "ExecReload",
        [f"{USER_EXE} check -c %E/factory-watcher/config.yaml", "/bin/kill -HUP $MAINPID"],
    ),
    # The venv and the configuration live in the home: it can only be read-only.
    ("Service", "ProtectHome", ["read-only"]),
    ("Install", "WantedBy", ["default.target"]),
]

# What a per-user manager cannot do (systemd.exec(5): "only available for system services").
NOT_IN_USER_UNIT = ["DynamicUser", "ProtectProc", "ProcSubset", "ProtectControlGroups", "RemoveIPC"]

CREDENTIALS = ["factory-api-key", "slack-bot-token", "slack-webhook-url", "webhook-secret"]
REQUIRED_CREDENTIALS = {"factory-api-key"}


def _ids(table: list[tuple[str, str, list[str]]]) -> list[str]:
    return [key for _, key, _ in table]


@pytest.mark.parametrize(
    ("section", "key", "values"), COMMON + SYSTEM_ONLY, ids=_ids(COMMON + SYSTEM_ONLY)
)
def test_system_unit_declares(system_unit: Unit, section: str, key: str, values: list[str]) -> None:
    """The system unit sets each required directive to exactly the expected value(s)."""
    assert system_unit[section].get(key) == values


@pytest.mark.parametrize(
    ("section", "key", "values"), COMMON + USER_ONLY, ids=_ids(COMMON + USER_ONLY)
)
def test_user_unit_declares(user_unit: Unit, section: str, key: str, values: list[str]) -> None:
    """The user unit sets each required directive to exactly the expected value(s)."""
    assert user_unit[section].get(key) == values


@pytest.mark.parametrize("key", NOT_IN_USER_UNIT)
def test_user_unit_leaves_out_system_only_settings(user_unit: Unit, key: str) -> None:
    """The user unit carries nothing a per-user service manager cannot set up."""
    assert key not in user_unit["Service"]


@pytest.mark.parametrize(
    ("unit_file", "credentials_dir"),
    [
        (SYSTEM_UNIT, "/etc/factory-watcher/credentials"),
        (USER_UNIT, "%E/factory-watcher/credentials"),
    ],
    ids=["system", "user"],
)
def test_credentials(unit_file: Path, credentials_dir: str) -> None:
    """Secrets come by name from the credentials directory; only the API key is mandatory."""
    service = parse_unit(unit_file.read_text())["Service"]
    assert service["LoadCredential"] == [f"{name}:{credentials_dir}/{name}" for name in CREDENTIALS]
    # A SetCredential= default makes a missing file non-fatal (systemd.exec(5)).
    defaults = {entry.partition(":")[0] for entry in service["SetCredential"]}
    assert defaults == set(CREDENTIALS) - REQUIRED_CREDENTIALS
    # systemd 252 refuses an empty value; the default is a blank line.
    assert {entry.partition(":")[2] for entry in service["SetCredential"]} == {"\\n"}


# ---- systemd-analyze -------------------------------------------------------------------------

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd; CI does)",
)


def _true() -> str:
    path = shutil.which("true")
    assert path is not None
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, check=False, timeout=60)


def stage_system_unit(text: str, tmp: Path) -> Path:
    """Copy the system unit with its application path pointed at a stand-in binary.

    verify insists that every Exec*= binary exists, and --root= would need a
    whole OS tree; the application path is the only thing rewritten.
    """
    assert text.count(SYSTEM_EXE) == 3, "ExecStartPre, ExecStart and ExecReload"
    stub = tmp / "bin" / "factory-watcher"
    stub.parent.mkdir(parents=True)
    stub.symlink_to(_true())
    unit = tmp / "factory-watcher.service"
    unit.write_text(text.replace(SYSTEM_EXE, str(stub)))
    return unit


def stage_user_unit(text: str, tmp: Path) -> tuple[Path, dict[str, str]]:
    """Copy the user unit unchanged, with an environment whose $HOME holds a stand-in binary.

    The in-process user manager resolves %h from $HOME and needs $XDG_RUNTIME_DIR.
    """
    home, run = tmp / "home", tmp / "run"
    stub = home / USER_EXE_IN_HOME
    stub.parent.mkdir(parents=True)
    stub.symlink_to(_true())
    run.mkdir(mode=0o700)
    unit = tmp / "unit" / "factory-watcher.service"
    unit.parent.mkdir()
    unit.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env |= {"HOME": str(home), "XDG_RUNTIME_DIR": str(run)}
    return unit, env


@needs_systemd_analyze
def test_system_unit_verifies_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the system unit without a single warning."""
    unit = stage_system_unit(SYSTEM_UNIT.read_text(), tmp_path)
    result = _run(["systemd-analyze", "verify", str(unit)])
    assert (result.returncode, result.stderr) == (0, "")


@needs_systemd_analyze
def test_user_unit_verifies_clean(tmp_path: Path) -> None:
    """`systemd-analyze --user verify` accepts the user unit without a single warning."""
    unit, env = stage_user_unit(USER_UNIT.read_text(), tmp_path)
    result = _run(["systemd-analyze", "--user", "verify", str(unit)], env=env)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ProtectSystem=strict", "ProtectSystem=strcit"),
        ("WatchdogSec=60s", "WatchdogSecs=60s"),
        ("SetCredential=webhook-secret:\\n", "SetCredential=webhook-secret:"),
    ],
    ids=["bad-value", "unknown-key", "empty-credential"],
)
@needs_systemd_analyze
def test_verify_reports_mistakes(tmp_path: Path, old: str, new: str) -> None:
    """The verify check is not vacuous: a slip in the unit shows up on stderr."""
    text = SYSTEM_UNIT.read_text()
    assert old in text
    unit = stage_system_unit(text.replace(old, new), tmp_path)
    assert _run(["systemd-analyze", "verify", str(unit)]).stderr != ""


def exposure(unit: Path) -> float:
    """The "Overall exposure level" of an offline `systemd-analyze security` review."""
    result = _run(["systemd-analyze", "security", "--offline=yes", str(unit)])
    assert (result.returncode, result.stderr) == (0, "")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    return float(match.group(1))


@needs_systemd_analyze
def test_system_unit_exposure_is_at_most_2() -> None:
    """`systemd-analyze security` rates the system unit at 2.0 or lower."""
    assert exposure(SYSTEM_UNIT) <= MAX_EXPOSURE


@needs_systemd_analyze
def test_ci_script_passes_on_the_shipped_units() -> None:
    """.ci/check-units exits 0 on the units in the tree."""
    result = _run(["bash", str(CHECK_UNITS)])
    assert result.returncode == 0, result.stdout + result.stderr


def _without_sandbox(text: str) -> str:
    """The system unit with every hardening line after "Identity" dropped."""
    head = text[: text.index("# ---- Identity")]
    return head + "[Install]\nWantedBy=multi-user.target\n"


@pytest.mark.parametrize(
    ("breaks", "complaint"),
    [
        (
            lambda text: text.replace("ProtectSystem=strict", "ProtectSystem=strcit"),
            "FAIL verify factory-watcher.service",
        ),
        (_without_sandbox, "FAIL exposure"),
    ],
    ids=["verify-warning", "exposure-too-high"],
)
@needs_systemd_analyze
def test_ci_script_fails_on_a_broken_unit(
    tmp_path: Path, breaks: Callable[[str], str], complaint: str
) -> None:
    """.ci/check-units exits 1 when verify warns or the exposure rises above 2.0."""
    for unit in (SYSTEM_UNIT, USER_UNIT):
        shutil.copy(unit, tmp_path / unit.name)
    broken = tmp_path / SYSTEM_UNIT.name
    broken.write_text(breaks(broken.read_text()))
    result = _run(["bash", str(CHECK_UNITS), str(tmp_path)])
    assert result.returncode == 1
    assert complaint in result.stderr


@pytest.mark.parametrize("unit_file", [SYSTEM_UNIT, ROOT / "docs" / "systemd.md"])
def test_watchdog_wording_matches_the_daemon(unit_file: Path) -> None:
    """The words say what `_supervise` does: a ping every 5 s while progress is under 60 s."""
    from watcher.daemon import HEARTBEAT_PERIOD, STALL_AFTER

    text = " ".join(unit_file.read_text().split())
    assert f"every {HEARTBEAT_PERIOD:g} s" in text
    assert f"{STALL_AFTER:g} s" in text
    assert "pings every WatchdogSec/2" not in text
    assert "every `notifier.watchdog_interval()` seconds" not in text
