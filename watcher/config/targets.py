"""The `targets` section: each destination built as the kind its `type` names.

Each target is validated by the model of its `type` and built into a
`SlackTarget`, `SlackWebhookTarget` or `WebhookTarget`.

Secrets (tokens, URLs, signing secrets) go through `SecretReader` and never
reach a problem message; every problem goes to the builder's `ProblemLog`.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watcher.config.models import (
    TARGET_MODELS,
    SlackSection,
    SlackTemplateSection,
    SlackWebhookSection,
    WebhookSection,
)
from watcher.config.problemlog import ProblemLog
from watcher.config.problems import did_you_mean
from watcher.config.secrets import SecretReader
from watcher.config.values import HEADER_NAME, RESERVED_HEADERS, TARGET_NAME, is_http_url, is_whsec
from watcher.config.yamlsafe import KeyPath
from watcher.core.settings import (
    DeliveryLimits,
    SlackTarget,
    SlackTemplate,
    SlackWebhookTarget,
    Target,
    WebhookTarget,
    WebhookTemplate,
)
from watcher.core.urls import is_loopback_url


class TargetBuilder:
    """Builds the targets, reporting every problem to `log`."""

    def __init__(self, log: ProblemLog, secrets: SecretReader) -> None:
        self.log = log
        self.secrets = secrets

    def targets(self, raw: Any) -> dict[str, Target]:
        at: KeyPath = ("targets",)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.log.report(at, "expected a mapping of target names to targets")
            return {}
        out: dict[str, Target] = {}
        for name, item in raw.items():
            here = (*at, name)
            if not TARGET_NAME.fullmatch(name):
                self.log.report(here, "target names use only letters, digits, '_', '.' and '-'")
            target = self.target(name, item, here)
            if target is not None:
                out[name] = target
        return out

    def target(self, name: str, raw: Any, at: KeyPath) -> Target | None:
        """Dispatch on `type` to the model of that kind, then build the target."""
        if not isinstance(raw, dict):
            self.log.report(at, "expected a mapping")
            return None
        kind = raw.get("type")
        model = TARGET_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            kinds = ", ".join(TARGET_MODELS)
            if kind is None:
                self.log.report((*at, "type"), f"is required: one of {kinds}")
            elif isinstance(kind, str):
                hint = did_you_mean(kind, TARGET_MODELS)
                self.log.report(
                    (*at, "type"), f"unknown target type '{kind}'{hint}; use one of {kinds}"
                )
            else:
                self.log.report((*at, "type"), f"expected one of: {kinds}")
            return None
        section = self.log.validate(model, raw, at)
        if section is None:
            return None
        limits = DeliveryLimits(max_attempts=section.max_attempts, max_age=section.max_age)
        if isinstance(section, SlackSection):
            return self.slack(name, section, at, limits)
        if isinstance(section, SlackWebhookSection):
            return self.slack_webhook(name, section, at, limits)
        assert isinstance(section, WebhookSection)
        return self.webhook(name, section, at, limits)

    def slack(
        self, name: str, section: SlackSection, at: KeyPath, limits: DeliveryLimits
    ) -> SlackTarget | None:
        token = self.secrets.secret(at, "token", section.token, section.token_file, required=True)
        if token is None:
            return None
        return SlackTarget(
            name=name,
            token=token,
            channel=section.channel,
            api_url=section.api_url,
            limits=limits,
            min_interval=section.min_interval,
            template=slack_template(section.template),
            card=section.card,
            thread=section.thread,
        )

    def slack_webhook(
        self, name: str, section: SlackWebhookSection, at: KeyPath, limits: DeliveryLimits
    ) -> SlackWebhookTarget | None:
        url = self.secrets.secret(at, "url", section.url, section.url_file, required=True)
        if url is None:
            return None
        if not is_http_url(url.reveal()):
            key = "url" if section.url is not None else "url_file"
            self.log.report(
                (*at, key), "expected an http:// or https:// URL (the value is not shown)"
            )
            return None
        return SlackWebhookTarget(
            name=name,
            url=url,
            limits=limits,
            min_interval=section.min_interval,
            template=slack_template(section.template),
        )

    def webhook(
        self, name: str, section: WebhookSection, at: KeyPath, limits: DeliveryLimits
    ) -> WebhookTarget | None:
        ok = True
        plain = urlsplit(section.url).scheme == "http"
        if plain and not section.allow_http and not is_loopback_url(section.url):
            self.log.report(
                (*at, "url"),
                "plain http:// sends the payload unencrypted; use https:// "
                "or set 'allow_http: true'",
            )
            ok = False
        secret = self.secrets.secret(
            at, "secret", section.secret, section.secret_file, required=False
        )
        if secret is not None and not is_whsec(secret.reveal()):
            key = "secret" if section.secret is not None else "secret_file"
            self.log.report(
                (*at, key),
                "malformed webhook secret: expected 'whsec_' followed by base64 "
                "(the value is not shown)",
            )
            ok = False
        for header, value in section.headers.items():
            where = (*at, "headers", header)
            if not HEADER_NAME.fullmatch(header):
                self.log.report(where, "not a valid HTTP header name")
                ok = False
            elif header.lower() in RESERVED_HEADERS:
                self.log.report(where, "this header is set by the watcher itself")
                ok = False
            if any(c in value for c in "\r\n\0"):
                self.log.report(where, "header values cannot contain line breaks or NUL")
                ok = False
        ca_file = None
        if section.ca_file is not None:
            ca_file = self.secrets.relative_to_config(Path(section.ca_file))
            problem = ca_file_problem(ca_file)
            if problem is not None:
                self.log.report((*at, "ca_file"), problem)
                ok = False
        if not ok:
            return None
        return WebhookTarget(
            name=name,
            url=section.url,
            secret=secret,
            headers=dict(section.headers),
            allow_http=section.allow_http,
            ca_file=ca_file,
            limits=limits,
            template=None if section.template is None else WebhookTemplate(section.template.body),
        )


def ca_file_problem(path: Path) -> str | None:
    """What keeps `path` from serving as a webhook's CA file, or None when it loads.

    Checked here, not first when the notifier is built: a file that holds no
    certificate would otherwise stop `run` at start-up, or a reload half-applied.
    """
    if not path.is_file():
        return f"CA file not found: {path}"
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        return f"no CA certificate in {path} (expected PEM: -----BEGIN CERTIFICATE-----)"
    except OSError as error:
        return f"cannot read the CA file {path}: {error.strerror or type(error).__name__}"
    return None


def slack_template(section: SlackTemplateSection | None) -> SlackTemplate | None:
    """Settings' form of a Slack template: the blocks as canonical JSON text."""
    if section is None:
        return None
    blocks = None if section.blocks is None else json.dumps(section.blocks, ensure_ascii=False)
    return SlackTemplate(text=section.text, blocks=blocks)
