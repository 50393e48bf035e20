"""Standard Webhooks signatures (https://www.standardwebhooks.com/), shared by sender and receiver.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the key is the base64
part of a `whsec_<base64>` secret; the signature header holds space-separated
`v1,<base64 HMAC-SHA256>` entries so a receiver can accept old and new keys during rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a password)
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300


class SigningSecretError(ValueError):
    """A webhook secret is not `whsec_<base64>`; the message never quotes the secret."""


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a `whsec_<base64>` secret (the prefix is optional)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SigningSecretError("webhook secret is not whsec_<base64>") from None
    if not key:
        raise SigningSecretError("webhook secret is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value (`v1,<base64>`) for one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the three Standard Webhooks headers for one message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    tolerance: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when `headers` carry a valid, fresh signature of `body` under `secret`.

    Header names are matched case-insensitively; a timestamp further than `tolerance`
    seconds from `now`, either way, fails (replay protection).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not signatures or not stamp.strip().isdigit():
        return False
    timestamp = int(stamp)
    if abs(now.timestamp() - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in signatures.split()
        if candidate.startswith(f"{SIGNATURE_VERSION},")
    )
