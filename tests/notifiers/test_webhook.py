"""WebhookNotifier: httpx against WebhookReceiver on loopback, TLS, and the status classifier."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import httpx
import pytest

from tests.webhook_schema import BodyChecker
from watcher.core.message import FailureKind, SendFailed, Sent, SlackMessage, WebhookMessage
from watcher.core.model import EventType
from watcher.core.render import render_webhook
from watcher.core.samples import sample_event
from watcher.core.secret import Secret
from watcher.core.settings import WebhookTarget
from watcher.notifiers.signing import SigningSecretError
from watcher.notifiers.webhook import WebhookNotifier, classify_webhook_status
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sinks import WebhookReceiver

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"canary-signing-key-5e1d").decode()
CANARY_HEADER = "Bearer canary-header-token-9b2c"
# A body as the watcher renders it (webhook events v1), so what these tests send is real.
MESSAGE = render_webhook(
    replace(sample_event(EventType.COMPLETED), id="evt_0123456789abcdef", occurred_at=NOW), "r"
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    bodies = BodyChecker()
    with WebhookReceiver(SECRET, now=lambda: NOW, on_message=bodies) as server:
        yield server
    assert not bodies.problems, bodies.problems


def target(
    url: str,
    *,
    secret: str | None = SECRET,
    allow_http: bool = True,
    headers: dict[str, str] | None = None,
    ca_file: Path | None = None,
) -> WebhookTarget:
    return WebhookTarget(
        name="ci",
        url=url,
        secret=Secret(secret) if secret is not None else None,
        headers=headers or {},
        allow_http=allow_http,
        ca_file=ca_file,
    )


async def send_once(
    target: WebhookTarget,
    message: WebhookMessage = MESSAGE,
    *,
    now: datetime = NOW,
    client_timeout: float = 10,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Sent | SendFailed:
    notifier = WebhookNotifier(target, timeout=client_timeout, transport=transport)
    try:
        return await notifier.send(message, now=now)
    finally:
        await notifier.aclose()


@pytest.mark.anyio
async def test_signed_delivery_verifies_at_the_receiver(receiver: WebhookReceiver) -> None:
    """The body arrives byte for byte with Standard Webhooks headers the receiver accepts."""
    outcome = await send_once(target(receiver.url + "/factory"))

    assert outcome == Sent()
    [request] = receiver.requests
    assert (request.path, request.body, request.signature_valid) == ("/factory", MESSAGE.body, True)
    assert request.headers["webhook-id"] == MESSAGE.id
    assert request.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"
    assert (request.json["type"], request.json["id"]) == ("session.completed", MESSAGE.id)


@pytest.mark.anyio
async def test_webhook_id_is_stable_across_sends_of_the_same_message(
    receiver: WebhookReceiver,
) -> None:
    """A retried message keeps its webhook-id; only the timestamp and signature move."""
    await send_once(target(receiver.url))
    await send_once(target(receiver.url), now=NOW + timedelta(seconds=90))

    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == MESSAGE.id
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 90
    assert first.signature_valid is True
    assert second.signature_valid is True


@pytest.mark.parametrize(
    ("sender_secret", "valid", "signed"),
    [
        (SECRET, True, True),
        ("whsec_" + base64.b64encode(b"some-other-key").decode(), False, True),
        (None, False, False),
    ],
)
@pytest.mark.anyio
async def test_receiver_judges_the_signature(
    receiver: WebhookReceiver, sender_secret: str | None, valid: bool, signed: bool
) -> None:
    """Only the shared secret verifies; without a secret no signature headers are sent."""
    await send_once(target(receiver.url, secret=sender_secret))

    [request] = receiver.requests
    assert request.signature_valid is valid
    assert ("webhook-signature" in request.headers) is signed


@pytest.mark.anyio
async def test_extra_headers_are_sent_but_cannot_replace_reserved_ones(
    receiver: WebhookReceiver,
) -> None:
    """The target's headers go along; Content-Type and the signature headers stay ours."""
    headers = {"X-Team": "platform", "content-type": "text/plain", "Webhook-Id": "forged"}

    await send_once(target(receiver.url, headers=headers))

    [request] = receiver.requests
    assert request.headers["x-team"] == "platform"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == MESSAGE.id
    assert request.signature_valid is True


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (201, None),
        (202, None),
        (204, None),
        (301, FailureKind.PERMANENT),
        (302, FailureKind.PERMANENT),
        (303, FailureKind.PERMANENT),
        (307, FailureKind.PERMANENT),
        (308, FailureKind.PERMANENT),
        (400, FailureKind.PERMANENT),
        (401, FailureKind.PERMANENT),
        (403, FailureKind.PERMANENT),
        (404, FailureKind.PERMANENT),
        (408, FailureKind.RETRYABLE),
        (409, FailureKind.PERMANENT),
        (410, FailureKind.PERMANENT),
        (413, FailureKind.PERMANENT),
        (422, FailureKind.PERMANENT),
        (429, FailureKind.RETRYABLE),
        (500, FailureKind.RETRYABLE),
        (502, FailureKind.RETRYABLE),
        (503, FailureKind.RETRYABLE),
        (504, FailureKind.RETRYABLE),
    ],
)
@pytest.mark.anyio
async def test_status_codes_classify(
    receiver: WebhookReceiver, status: int, kind: FailureKind | None
) -> None:
    """2xx is sent; 408, 429 and 5xx are retryable; 3xx and other 4xx are permanent."""
    receiver.respond_with(status, body="nope" if status >= 300 else "")

    outcome = await send_once(target(receiver.url))

    if kind is None:
        assert outcome == Sent()
    else:
        assert isinstance(outcome, SendFailed)
        assert outcome.kind is kind
        assert outcome.details == {"status": status}
        assert outcome.reason.startswith(f"webhook: HTTP {status}")


@pytest.mark.parametrize(
    ("status", "retry_after", "kind", "wait"),
    [
        (204, "30", None, None),
        (429, "30", FailureKind.RETRYABLE, timedelta(seconds=30)),
        (429, "86400", FailureKind.RETRYABLE, timedelta(hours=1)),
        (503, "30", FailureKind.RETRYABLE, None),
        (308, None, FailureKind.PERMANENT, None),
        (451, None, FailureKind.PERMANENT, None),
    ],
)
def test_classify_webhook_status_table(
    status: int, retry_after: str | None, kind: FailureKind | None, wait: timedelta | None
) -> None:
    """Retry-After counts on 429 only (capped at an hour); the status alone decides the kind."""
    headers = {"Retry-After": retry_after} if retry_after else {}

    outcome = classify_webhook_status(status, b"", headers, now=NOW)

    if kind is None:
        assert outcome == Sent()
    else:
        assert isinstance(outcome, SendFailed)
        assert (outcome.kind, outcome.retry_after) == (kind, wait)


def test_classify_webhook_status_redacts_echoed_secrets() -> None:
    """Values listed for redaction are masked in the body excerpt."""
    outcome = classify_webhook_status(
        400, b"bad token tok-123456", {}, now=NOW, redact=("tok-123456",)
    )

    assert isinstance(outcome, SendFailed)
    assert outcome.reason == "webhook: HTTP 400: bad token ********"


@pytest.mark.anyio
async def test_redirect_is_not_followed() -> None:
    """A 307 elsewhere is a permanent failure, and the signed payload goes nowhere else."""
    with WebhookReceiver(SECRET) as first, WebhookReceiver(SECRET) as elsewhere:
        first.redirect_to(elsewhere.url + "/stolen")

        outcome = await send_once(target(first.url))

        assert isinstance(outcome, SendFailed)
        assert outcome.kind is FailureKind.PERMANENT
        assert outcome.reason == "webhook: HTTP 307: redirect not followed"
        assert len(first.requests) == 1
        assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        ("120", timedelta(seconds=120)),
        ("Fri, 02 Jan 2026 03:06:05 GMT", timedelta(minutes=2)),
        ("soon", None),
    ],
)
@pytest.mark.anyio
async def test_retry_after_is_propagated(
    receiver: WebhookReceiver, retry_after: str, wait: timedelta | None
) -> None:
    """A 429's Retry-After (seconds or HTTP date, relative to `now`) becomes retry_after."""
    receiver.respond_with(429, headers={"Retry-After": retry_after})

    outcome = await send_once(target(receiver.url))

    assert isinstance(outcome, SendFailed)
    assert (outcome.kind, outcome.retry_after) == (FailureKind.RETRYABLE, wait)


@pytest.mark.anyio
async def test_reason_quotes_a_short_single_line_excerpt(receiver: WebhookReceiver) -> None:
    """Error bodies are cut to 200 characters on one line."""
    receiver.respond_with(500, body="first line\nsecond\tline\r\n" + "x" * 5000)

    outcome = await send_once(target(receiver.url))

    assert isinstance(outcome, SendFailed)
    excerpt = outcome.reason.removeprefix("webhook: HTTP 500: ")
    assert excerpt.startswith("first line second line xxx")
    assert len(excerpt) == 200
    assert "\n" not in outcome.reason


@pytest.mark.parametrize(
    ("fault", "kind", "wait"),
    [
        (Fault.HTTP_500, FailureKind.RETRYABLE, None),
        (Fault.HTTP_502_HTML, FailureKind.RETRYABLE, None),
        (Fault.HTTP_503, FailureKind.RETRYABLE, None),
        (Fault.HTTP_429, FailureKind.RETRYABLE, None),
        (Fault.HTTP_429_RETRY_AFTER, FailureKind.RETRYABLE, timedelta(seconds=5)),
        # A 2xx whose body breaks off or claims JSON it is not is no acceptance.
        (Fault.TRUNCATED_JSON, FailureKind.RETRYABLE, None),
        (Fault.GARBAGE, FailureKind.RETRYABLE, None),
        (Fault.STALL, FailureKind.RETRYABLE, None),
        (Fault.RESET, FailureKind.RETRYABLE, None),
    ],
)
@pytest.mark.anyio
async def test_each_fault_classifies(
    receiver: WebhookReceiver, fault: Fault, kind: FailureKind | None, wait: timedelta | None
) -> None:
    """Every injected fault yields the documented outcome, never an exception."""
    receiver.faults.add(FaultRule(fault, retry_after="5"))

    outcome = await send_once(target(receiver.url), client_timeout=0.5)

    if kind is None:
        assert outcome == Sent()
    else:
        assert isinstance(outcome, SendFailed)
        assert (outcome.kind, outcome.retry_after) == (kind, wait)


@pytest.mark.anyio
async def test_plain_http_is_refused_without_allow_http(receiver: WebhookReceiver) -> None:
    """http:// to another host fails permanently unless allowed; loopback needs no opt-in."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)

    outcome = await send_once(
        target("http://hooks.example.com/x", allow_http=False),
        transport=httpx.MockTransport(record),
    )
    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.PERMANENT
    assert "plain http refused" in outcome.reason
    assert sent == []

    assert await send_once(target(receiver.url, allow_http=False)) == Sent()
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/hook", "webhook: unsupported scheme 'ftp'"),
        ("https://hooks.example.com:notaport/hook", "webhook: invalid URL"),
    ],
)
@pytest.mark.anyio
async def test_unusable_urls_are_permanent(url: str, reason: str) -> None:
    """URLs that cannot carry a webhook fail permanently before any connection."""
    outcome = await send_once(target(url))

    assert isinstance(outcome, SendFailed)
    assert (outcome.kind, outcome.reason) == (FailureKind.PERMANENT, reason)


@pytest.mark.anyio
async def test_https_to_a_port_nobody_listens_on_is_retryable() -> None:
    """With a ca_file, a refused connection is a retryable transport failure."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        url = f"https://127.0.0.1:{holder.getsockname()[1]}/hook"

        outcome = await send_once(target(url, allow_http=False, ca_file=Path(certifi.where())))

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.RETRYABLE
    assert outcome.reason.startswith("webhook: connection failed (ConnectError")


@pytest.mark.anyio
async def test_https_to_a_plain_http_server_is_a_retryable_tls_failure(
    receiver: WebhookReceiver,
) -> None:
    """A TLS handshake with a server that does not speak TLS fails retryably."""
    url = receiver.url.replace("http://", "https://")

    outcome = await send_once(target(url, allow_http=False, ca_file=Path(certifi.where())))

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.RETRYABLE
    assert "TLS" in outcome.reason


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_receiver(self_signed: tuple[Path, Path]) -> Iterator[WebhookReceiver]:
    """A WebhookReceiver whose listening socket speaks TLS with the throwaway certificate."""
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = WebhookReceiver(SECRET, now=lambda: NOW)
    server.use_tls(context)
    with server:
        yield server


@pytest.mark.parametrize(("trust_cert", "sent"), [(True, True), (False, False)])
@pytest.mark.anyio
async def test_tls_is_verified_against_the_ca_file(
    tls_receiver: WebhookReceiver, self_signed: tuple[Path, Path], trust_cert: bool, sent: bool
) -> None:
    """A certificate chaining to ca_file is accepted; the default roots reject it."""
    url = tls_receiver.url
    ca_file = self_signed[0] if trust_cert else None

    outcome = await send_once(target(url, allow_http=False, ca_file=ca_file))

    if sent:
        assert outcome == Sent()
        assert [r.signature_valid for r in tls_receiver.requests] == [True]
    else:
        assert isinstance(outcome, SendFailed)
        assert outcome.kind is FailureKind.RETRYABLE
        assert "CERTIFICATE_VERIFY_FAILED" in outcome.reason
        assert tls_receiver.requests == []


@pytest.mark.parametrize(
    "respond",
    [
        pytest.param({"status": 400, "body": f"bad signature for secret {SECRET}"}, id="secret"),
        pytest.param({"status": 401, "body": f"who is {CANARY_HEADER}?"}, id="header"),
        pytest.param({"status": 204}, id="sent"),
    ],
)
@pytest.mark.anyio
async def test_secrets_never_appear_in_reasons_or_reprs(
    receiver: WebhookReceiver, respond: dict[str, object]
) -> None:
    """An echoing server cannot put the signing secret or header values into a reason."""
    receiver.respond_with(**respond)  # type: ignore[arg-type]
    notifier = WebhookNotifier(target(receiver.url, headers={"Authorization": CANARY_HEADER}))
    try:
        outcome = await notifier.send(MESSAGE, now=NOW)
    finally:
        await notifier.aclose()

    for text in (repr(notifier), repr(outcome)):
        assert SECRET not in text
        assert SECRET.removeprefix("whsec_") not in text
        assert "canary-header-token" not in text


def test_a_malformed_secret_fails_at_construction_without_quoting_it() -> None:
    """A secret that is not whsec_<base64> is a start-up error that hides its value."""
    with pytest.raises(SigningSecretError) as caught:
        WebhookNotifier(target("https://hooks.example.com/x", secret="whsec_not*base64*canary"))

    assert "canary" not in str(caught.value)


@pytest.mark.anyio
async def test_a_slack_message_is_a_programming_error(receiver: WebhookReceiver) -> None:
    """Handing a webhook notifier a SlackMessage raises TypeError instead of sending."""
    notifier = WebhookNotifier(target(receiver.url))
    try:
        with pytest.raises(TypeError, match="SlackMessage"):
            await notifier.send(SlackMessage("hello"), now=NOW)
    finally:
        await notifier.aclose()
    assert receiver.requests == []


class _BrokenBody(httpx.AsyncByteStream):
    """A response body that fails after its first chunk."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"upstream exploded"
        raise httpx.ReadError("connection lost mid-body")


def _raise(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("transport", "kind", "reason"),
    [
        (_raise(httpx.ReadTimeout("slow")), FailureKind.RETRYABLE, "webhook: timed out"),
        (_raise(httpx.ConnectTimeout("slow")), FailureKind.RETRYABLE, "webhook: timed out"),
        (
            _raise(httpx.RemoteProtocolError("eh")),
            FailureKind.RETRYABLE,
            "webhook: connection failed (RemoteProtocolError)",
        ),
        (
            httpx.MockTransport(lambda request: httpx.Response(502, stream=_BrokenBody())),
            FailureKind.RETRYABLE,
            "webhook: HTTP 502: upstream exploded",
        ),
        (
            httpx.MockTransport(lambda request: httpx.Response(404, content=b"\x00\xff\x01gone")),
            FailureKind.PERMANENT,
            "webhook: HTTP 404: \ufffd gone",
        ),
    ],
)
@pytest.mark.anyio
async def test_exotic_transport_outcomes(
    transport: httpx.AsyncBaseTransport, kind: FailureKind, reason: str
) -> None:
    """Timeouts, protocol errors, bodies that break off or are binary still classify cleanly."""
    outcome = await send_once(target("https://hooks.example.com/factory"), transport=transport)

    assert isinstance(outcome, SendFailed)
    assert (outcome.kind, outcome.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("content_type", "body", "accepted"),
    [
        ("text/plain", b"ok", True),
        ("application/json", b'{"received": true}', True),
        ("application/json; charset=utf-8", b"", True),
        ("text/html", b"<html>thanks</html>", True),
        ("application/problem+json", b'{"ok"', False),
        ("application/json", b"\x00\xffnot json", False),
    ],
)
@pytest.mark.anyio
async def test_a_2xx_is_acceptance_when_its_body_is_what_it_claims(
    content_type: str, body: bytes, accepted: bool
) -> None:
    """Any whole 2xx answer is acceptance, except one that claims JSON and is not."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": content_type}, content=body)

    outcome = await send_once(
        target("https://hooks.example.com/x"), transport=httpx.MockTransport(answer)
    )
    if accepted:
        assert outcome == Sent()
    else:
        assert isinstance(outcome, SendFailed)
        assert outcome.kind is FailureKind.RETRYABLE
        assert "malformed JSON body" in outcome.reason
