"""What `factory-watcher doctor` concludes from what it observed, and how it says so.

Pure: each function takes what a probe saw (an HTTP answer, a Slack reply, the
state file) and returns findings: a verdict (ok, warning, problem), what was
checked, and what it means and what to do. The probes, in
`watcher.commands.doctor`, do the I/O. No finding quotes a secret: the texts
are built from statuses, error names and host names, and the command masks
every configured secret once more before printing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from watcher.core.discovery import ListPageError, parse_list_page
from watcher.core.settings import SlackTarget

DOCTOR_FORMAT = 1  # the version of the --json shape
CLOCK_OK_S = 30  # a Date header has whole seconds, and the request took some time
CLOCK_PROBLEM_S = 300  # webhook receivers refuse signatures further off than 5 minutes
MANIFEST = "docs/slack-app-manifest.yaml"
ERROR_WORD = re.compile(r"[a-z0-9_.]{1,60}|HTTP [0-9]{3}")
TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
)


class Verdict(StrEnum):
    """How a check came out; any problem makes `doctor` exit 1."""

    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    """One checked thing: `check` is a stable id for scripts, `what` and `detail` are for people.

    `what` holds no ": ", so a line splits into verdict, what and detail at the first one.
    """

    check: str
    verdict: Verdict
    what: str
    detail: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An HTTP answer a probe got: status, `Date` header, the start of the body."""

    status: int
    body: bytes = b""
    date: str | None = None
    elapsed_ms: int = 0


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """A request that got no HTTP answer; `reason` names the failure, never the URL."""

    reason: str


@dataclass(frozen=True, slots=True)
class SlackReply:
    """One Slack Web API answer: `ok`, its `error`, its data, the `x-oauth-scopes` it listed."""

    ok: bool
    error: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] | None = None
    date: str | None = None


@dataclass(frozen=True, slots=True)
class StoreObservation:
    """The state database as found: absent (and can it be created), or open and checked."""

    path: str
    exists: bool
    writable: bool
    healthy: bool | None = None
    error: str | None = None


# --- the Factory API ---------------------------------------------------------------------


def _api_detail(body: bytes) -> str:
    """The API's own `detail` words from an error body, as a suffix, or nothing."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if not isinstance(detail, str) or not detail.strip():
        return ""
    return f": {' '.join(detail.split())[:160]}"


def api_findings(base_url: str, answer: HttpAnswer | NoAnswer) -> list[Finding]:
    """The base URL answers; the API key may list sessions (one `GET /api/v0/sessions`)."""
    url_what, key_what = "Factory API", "Factory API key"
    if isinstance(answer, NoAnswer):
        return [
            Finding(
                "api.url",
                Verdict.PROBLEM,
                url_what,
                f"no answer from {base_url} ({answer.reason}): check factory.base_url, "
                "the network and any proxy (HTTPS_PROXY, NO_PROXY)",
            ),
            Finding("api.key", Verdict.WARNING, key_what, "not checked: the API did not answer"),
        ]
    status = answer.status
    said = _api_detail(answer.body)
    answered = Finding(
        "api.url",
        Verdict.OK,
        url_what,
        f"{base_url} answers (HTTP {status}, {answer.elapsed_ms} ms)",
    )
    if status == 200:
        return [answered, _listed(key_what, answer.body)]
    if status == 401:
        return [
            answered,
            Finding(
                "api.key",
                Verdict.PROBLEM,
                key_what,
                f"rejected (HTTP 401{said}): the key is wrong, revoked or expired; "
                "check factory.api_key (or api_key_file) and create a new key in Factory "
                "if needed",
            ),
        ]
    if status == 403:
        return [
            answered,
            Finding(
                "api.key",
                Verdict.PROBLEM,
                key_what,
                f"accepted but refused (HTTP 403{said}): either the key belongs to a Member "
                "or guest (use a key of a Manager or Owner), or your organisation does not "
                "have the Sessions API feature (ask Factory to enable it)",
            ),
        ]
    if status == 404:
        return [
            Finding(
                "api.url",
                Verdict.PROBLEM,
                url_what,
                f"{base_url} answers HTTP 404 for /api/v0/sessions{said}: is factory.base_url "
                "the Factory API (https://api.factory.ai)?",
            ),
            Finding("api.key", Verdict.WARNING, key_what, "not checked: no sessions API there"),
        ]
    if status == 429:
        return [
            answered,
            Finding(
                "api.key",
                Verdict.WARNING,
                key_what,
                "not checked: the API is rate-limiting this key (HTTP 429); try again shortly",
            ),
        ]
    return [
        answered,
        Finding(
            "api.key",
            Verdict.PROBLEM,
            key_what,
            f"not confirmed: the API answered HTTP {status}{said}; try again later",
        ),
    ]


def _listed(what: str, body: bytes) -> Finding:
    try:
        parse_list_page(json.loads(body))
    except (ValueError, RecursionError, ListPageError):
        return Finding(
            "api.key",
            Verdict.WARNING,
            what,
            "accepted, but the session list is not what the Factory API sends: "
            "is factory.base_url the Factory API?",
        )
    return Finding("api.key", Verdict.OK, what, "accepted: it may read sessions")


def clock_finding(dates: Iterable[tuple[str, str | None]], now: datetime) -> Finding:
    """This machine's clock against the first server `Date` header among (source, header)."""
    for source, header in dates:
        if not header:
            continue
        try:
            theirs = parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            continue
        if theirs.tzinfo is None:
            continue
        skew = (now - theirs).total_seconds()
        way = "ahead of" if skew > 0 else "behind"
        shown = f"{_duration(abs(skew))} {way} {source}"
        if abs(skew) <= CLOCK_OK_S:
            return Finding("clock", Verdict.OK, "clock", f"within {CLOCK_OK_S}s of {source}")
        if abs(skew) <= CLOCK_PROBLEM_S:
            return Finding(
                "clock",
                Verdict.WARNING,
                "clock",
                f"{shown}: times in messages will be off; sync the clock (NTP)",
            )
        return Finding(
            "clock",
            Verdict.PROBLEM,
            "clock",
            f"{shown}: webhook receivers refuse signatures more than 5 minutes off; "
            "sync the clock (NTP, e.g. `timedatectl set-ntp true`)",
        )
    return Finding("clock", Verdict.WARNING, "clock", "not checked: no server sent a Date header")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


# --- Slack ---------------------------------------------------------------------------------


def error_word(text: str | None) -> str:
    """`text` when it is an error name like Slack's (`no_service`) or `HTTP 502`, else nothing.

    Anything longer may echo the request, and a Slack webhook's path is its secret.
    """
    word = (text or "").strip()
    return word if ERROR_WORD.fullmatch(word) else ""


def slack_findings(
    target: SlackTarget, auth: SlackReply | NoAnswer, info: SlackReply | NoAnswer | None
) -> list[Finding]:
    """Token (`auth.test`), scopes (`x-oauth-scopes`) and channel (`conversations.info`)."""
    name = target.name
    what = f"Slack token (target {name})"
    if isinstance(auth, NoAnswer):
        return [
            Finding(
                "slack.token",
                Verdict.PROBLEM,
                what,
                f"no answer from Slack ({auth.reason}): check api_url, the network and any proxy",
                name,
            )
        ]
    if not auth.ok:
        if auth.error in TOKEN_ERRORS:
            detail = (
                f"Slack refused it ({error_word(auth.error)}): use the app's Bot User OAuth "
                "Token (xoxb-...) from OAuth & Permissions; reinstall the app if it was revoked"
            )
        else:
            detail = f"auth.test failed ({error_word(auth.error) or 'no error named'})"
        return [Finding("slack.token", Verdict.PROBLEM, what, detail, name)]
    bot = str(auth.data.get("user") or "the bot")
    team = str(auth.data.get("team") or "?")
    found = [Finding("slack.token", Verdict.OK, what, f"valid: @{bot} in workspace {team}", name)]
    private = _is_private(info)
    found.append(scope_finding(target, auth.scopes, private))
    if info is not None:
        found.append(channel_finding(target, info, auth.scopes, bot))
    return found


def _is_private(info: SlackReply | NoAnswer | None) -> bool | None:
    if not isinstance(info, SlackReply) or not info.ok:
        return None
    channel = info.data.get("channel")
    return bool(channel.get("is_private")) if isinstance(channel, dict) else None


def needed_scopes(target: SlackTarget, private: bool | None) -> list[tuple[str, ...]]:
    """The scopes `target` needs, each as the alternatives that satisfy it.

    Every post needs `chat:write`; live cards read the channel's history to find
    a card again after a restart (`channels:history`, or `groups:history` for a
    private channel; either while the channel's kind is unknown).
    """
    needed: list[tuple[str, ...]] = [("chat:write",)]
    if target.card:
        if private is None:
            needed.append(("channels:history", "groups:history"))
        else:
            needed.append(("groups:history",) if private else ("channels:history",))
    return needed


def scope_finding(
    target: SlackTarget, scopes: frozenset[str] | None, private: bool | None
) -> Finding:
    """Does the token carry the scopes this target's features use?"""
    what, name = f"Slack scopes (target {target.name})", target.name
    if scopes is None:
        return Finding(
            "slack.scopes", Verdict.WARNING, what, "not checked: Slack listed no scopes", name
        )
    if "chat:write" not in scopes:
        return Finding(
            "slack.scopes",
            Verdict.PROBLEM,
            what,
            "the token lacks chat:write, which every post needs: add it under OAuth & "
            f"Permissions -> Bot Token Scopes (or create the app from {MANIFEST}), "
            "then reinstall the app",
            name,
        )
    missing = [alts for alts in needed_scopes(target, private) if not scopes & set(alts)]
    if missing:
        shown = " or ".join(missing[0])
        return Finding(
            "slack.scopes",
            Verdict.WARNING,
            what,
            f"cards are on but the token lacks {shown}: after a restart the watcher cannot "
            "find a card it posted and may post it again; add the scope and reinstall the "
            "app, or set card: false",
            name,
        )
    have = sorted({s for alts in needed_scopes(target, private) for s in alts} & scopes)
    return Finding("slack.scopes", Verdict.OK, what, f"has {', '.join(have)}", name)


def channel_finding(
    target: SlackTarget, info: SlackReply | NoAnswer, scopes: frozenset[str] | None, bot: str
) -> Finding:
    """Does the channel exist, is it open, and may the bot post there?"""
    channel, name = target.channel, target.name
    what = f"Slack channel {channel} (target {name})"
    invite = f"/invite @{bot}"
    if isinstance(info, NoAnswer):
        return Finding("slack.channel", Verdict.PROBLEM, what, f"not checked: {info.reason}", name)
    if not info.ok:
        if info.error == "channel_not_found":
            detail = (
                "not found: check the id (channel name -> About -> Channel ID); for a private "
                f"channel, invite the bot first ({invite})"
            )
            return Finding("slack.channel", Verdict.PROBLEM, what, detail, name)
        if info.error == "missing_scope":
            detail = (
                "not checked: looking a channel up needs channels:read (groups:read for a "
                f"private one); posts may still work; the app in {MANIFEST} has them"
            )
            return Finding("slack.channel", Verdict.WARNING, what, detail, name)
        detail = f"conversations.info failed ({error_word(info.error) or 'no error named'})"
        return Finding("slack.channel", Verdict.PROBLEM, what, detail, name)
    data = info.data.get("channel")
    data = data if isinstance(data, dict) else {}
    shown = f"#{data['name']}" if data.get("name") else channel
    if data.get("is_archived"):
        detail = f"{shown} is archived: unarchive it or choose another channel"
        return Finding("slack.channel", Verdict.PROBLEM, what, detail, name)
    if data.get("is_member"):
        return Finding("slack.channel", Verdict.OK, what, f"{shown}: @{bot} is a member", name)
    if not data.get("is_private") and scopes is not None and "chat:write.public" in scopes:
        detail = f"{shown}: @{bot} is not a member but may post (chat:write.public)"
        return Finding("slack.channel", Verdict.OK, what, detail, name)
    detail = (
        f"@{bot} cannot post to {shown}: it is not a member and the token lacks "
        f"chat:write.public; type {invite} in {shown}, or add chat:write.public and "
        "reinstall the app"
    )
    return Finding("slack.channel", Verdict.PROBLEM, what, detail, name)


def slack_webhook_finding(name: str, host: str, answer: HttpAnswer | NoAnswer) -> Finding:
    """A Slack incoming webhook URL probed with an empty payload (which posts nothing).

    Slack refuses an empty payload with 400 (`no_text`, `invalid_payload`) at a
    live URL; a removed or mistyped one answers 403 or 404.
    """
    what = f"Slack webhook (target {name})"
    if isinstance(answer, NoAnswer):
        detail = f"no answer from {host} ({answer.reason}): check the URL and the network"
        return Finding("slack_webhook.url", Verdict.PROBLEM, what, detail, name)
    said = error_word(answer.body.decode("utf-8", "replace"))
    if answer.status in (200, 400):
        detail = f"{host} knows this webhook (an empty test payload, not posted)"
        return Finding("slack_webhook.url", Verdict.OK, what, detail, name)
    if answer.status in (403, 404, 410):
        detail = (
            f"Slack does not accept this URL (HTTP {answer.status} {said}): the webhook was "
            "removed or mistyped; create a new incoming webhook and update the url"
        )
        return Finding("slack_webhook.url", Verdict.PROBLEM, what, detail, name)
    detail = f"{host} answered HTTP {answer.status} {said}".rstrip()
    return Finding("slack_webhook.url", Verdict.WARNING, what, detail, name)


def webhook_finding(name: str, origin: str, answer: HttpAnswer | NoAnswer) -> Finding:
    """A generic webhook's server answers at all (a GET; `--send` posts a signed test)."""
    what = f"webhook (target {name})"
    if isinstance(answer, NoAnswer):
        detail = (
            f"no answer from {origin} ({answer.reason}): is the receiver running, "
            "and is the url right?"
        )
        return Finding("webhook.url", Verdict.PROBLEM, what, detail, name)
    if answer.status in (502, 503, 504):
        detail = f"{origin} answers HTTP {answer.status} to a GET: is the receiver up?"
        return Finding("webhook.url", Verdict.WARNING, what, detail, name)
    detail = f"{origin} answers (HTTP {answer.status} to a GET; --send posts a signed test)"
    return Finding("webhook.url", Verdict.OK, what, detail, name)


def check_failed_finding(name: str, error: str) -> Finding:
    """A target whose check raised `error` (a bug of ours, or an answer nobody foresaw)."""
    detail = f"the check itself failed ({error}); the other checks went on"
    return Finding("target", Verdict.PROBLEM, f"target {name}", detail, name)


def send_finding(name: str, failure: str | None) -> Finding:
    """The test notification `--send` sent to a target: delivered, or why not."""
    what = f"test notification (target {name})"
    if failure is None:
        return Finding("send", Verdict.OK, what, "delivered", name)
    return Finding("send", Verdict.PROBLEM, what, f"failed: {failure}", name)


# --- state, config, output -------------------------------------------------------------------


def state_finding(seen: StoreObservation) -> Finding:
    """The state directory is writable and the database (if there is one yet) healthy."""
    what = f"state {seen.path}"
    if seen.error is not None:
        detail = f"cannot be opened ({seen.error}): check state.path and its permissions"
        return Finding("state", Verdict.PROBLEM, what, detail)
    if not seen.exists:
        if seen.writable:
            detail = "not created yet; its directory is writable (run creates it)"
            return Finding("state", Verdict.OK, what, detail)
        detail = "its directory is not writable: choose another state.path or fix permissions"
        return Finding("state", Verdict.PROBLEM, what, detail)
    if seen.healthy is False:
        detail = (
            "the integrity check failed: restore a backup (factory-watcher backup) or move "
            "the file away to start afresh"
        )
        return Finding("state", Verdict.PROBLEM, what, detail)
    if not seen.writable:
        detail = "the file or its directory is not writable: fix the permissions"
        return Finding("state", Verdict.PROBLEM, what, detail)
    return Finding("state", Verdict.OK, what, "writable; the integrity check passed")


def config_findings(path: str, problems: Sequence[str]) -> list[Finding]:
    """One finding per config problem, or one that says the file is valid."""
    if not problems:
        return [Finding("config", Verdict.OK, f"config {path}", "valid")]
    return [Finding("config", Verdict.PROBLEM, "config", problem) for problem in problems]


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when nothing is a problem (warnings allowed), else 1."""
    return 1 if any(f.verdict is Verdict.PROBLEM for f in findings) else 0


def render_text(findings: Sequence[Finding]) -> str:
    """One line per finding, `ok|warning|problem  what: detail`, then a summary line."""
    lines = [f"{f.verdict.value:<7}  {f.what}: {f.detail}" for f in findings]
    problems = sum(f.verdict is Verdict.PROBLEM for f in findings)
    warnings = sum(f.verdict is Verdict.WARNING for f in findings)
    if problems:
        lines.append(f"{_count(problems, 'problem')}, {_count(warnings, 'warning')}")
    elif warnings:
        lines.append(f"no problems, {_count(warnings, 'warning')}")
    else:
        lines.append("no problems")
    return "\n".join(lines)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def to_json(findings: Sequence[Finding]) -> dict[str, Any]:
    """The `--json` document: a format number, `ok`, counts, and every finding in order."""
    counts = {v.value: sum(f.verdict is v for f in findings) for v in Verdict}
    return {
        "format": DOCTOR_FORMAT,
        "ok": exit_code(findings) == 0,
        "counts": counts,
        "checks": [
            {
                "check": f.check,
                "verdict": f.verdict.value,
                "target": f.target,
                "what": f.what,
                "detail": f.detail,
            }
            for f in findings
        ],
    }
