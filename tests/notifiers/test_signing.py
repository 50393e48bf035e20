"""Standard Webhooks signing and verification as pure functions."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from watcher.notifiers.signing import (
    SigningSecretError,
    secret_key,
    sign,
    signature_headers,
    verify,
)

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SIGNED_AT = datetime.fromtimestamp(VECTOR_TS, UTC)
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key entirely").decode()


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    headers.update(overrides)
    return headers


def test_sign_reproduces_the_published_vector() -> None:
    """Our signature equals the one in the Standard Webhooks specification."""
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_signature_headers_carry_id_timestamp_and_signature() -> None:
    """The three headers are exactly what a Standard Webhooks receiver reads."""
    assert signature_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == vector_headers()


def test_the_whsec_prefix_is_optional() -> None:
    """A bare base64 key signs like its whsec_ form."""
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert sign(bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


@pytest.mark.parametrize(
    ("secret", "headers", "body", "now", "valid"),
    [
        (VECTOR_SECRET, vector_headers(), VECTOR_BODY, SIGNED_AT, True),
        (
            VECTOR_SECRET,
            {k.title(): v for k, v in vector_headers().items()},
            VECTOR_BODY,
            SIGNED_AT,
            True,
        ),
        (VECTOR_SECRET, vector_headers(), VECTOR_BODY, SIGNED_AT + timedelta(seconds=300), True),
        (VECTOR_SECRET, vector_headers(), VECTOR_BODY, SIGNED_AT - timedelta(seconds=300), True),
        (VECTOR_SECRET, vector_headers(), VECTOR_BODY, SIGNED_AT + timedelta(seconds=301), False),
        (VECTOR_SECRET, vector_headers(), VECTOR_BODY, SIGNED_AT - timedelta(seconds=301), False),
        (VECTOR_SECRET, vector_headers(), VECTOR_BODY + b" ", SIGNED_AT, False),
        (OTHER_SECRET, vector_headers(), VECTOR_BODY, SIGNED_AT, False),
        (
            VECTOR_SECRET,
            vector_headers(**{"webhook-id": "msg_other"}),
            VECTOR_BODY,
            SIGNED_AT,
            False,
        ),
        (
            VECTOR_SECRET,
            vector_headers(**{"webhook-signature": f"v1,bm9wZQ== {VECTOR_SIGNATURE}"}),
            VECTOR_BODY,
            SIGNED_AT,
            True,
        ),
        (
            VECTOR_SECRET,
            vector_headers(**{"webhook-signature": VECTOR_SIGNATURE.replace("v1,", "v2,")}),
            VECTOR_BODY,
            SIGNED_AT,
            False,
        ),
        (
            VECTOR_SECRET,
            vector_headers(**{"webhook-timestamp": "yesterday"}),
            VECTOR_BODY,
            SIGNED_AT,
            False,
        ),
        (
            VECTOR_SECRET,
            {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS)},
            VECTOR_BODY,
            SIGNED_AT,
            False,
        ),
        (VECTOR_SECRET, {}, VECTOR_BODY, SIGNED_AT, False),
    ],
    ids=[
        "valid",
        "header-case",
        "300s-late",
        "300s-early",
        "too-late",
        "too-early",
        "tampered-body",
        "wrong-secret",
        "other-id",
        "rotation-list",
        "unknown-version",
        "bad-timestamp",
        "no-signature",
        "no-headers",
    ],
)
def test_verify_table(
    secret: str, headers: dict[str, str], body: bytes, now: datetime, valid: bool
) -> None:
    """Only an untampered body, signed with the secret, within the tolerance, verifies."""
    assert verify(secret, headers, body, now=now) is valid


@pytest.mark.parametrize("secret", ["whsec_", "whsec_***", "whsec_abc", ""])
def test_malformed_secrets_are_refused_without_being_quoted(secret: str) -> None:
    """A secret that is not base64 raises SigningSecretError with a message that hides it."""
    with pytest.raises(SigningSecretError) as caught:
        secret_key(secret)

    assert str(caught.value) in {"webhook secret is not whsec_<base64>", "webhook secret is empty"}
