"""A webhook receiver for factory-watcher: verifies the signature, then the order.

Run: WEBHOOK_SECRET=whsec_... python receiver.py 8080   (standard library only)
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock

TOLERANCE_S = 300  # refuse replays of old deliveries


def signature_ok(secret: str, headers, body: bytes) -> bool:
    """Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`, key = base64 of whsec_…"""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE_S:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return any(
        hmac.compare_digest(expected, sig) for sig in headers.get("webhook-signature", "").split()
    )


class Ordering:
    """Keeps the highest `sequence` handled per session: anything at or below it is a
    retry or a stale, reordered update, acknowledged but not handled again."""

    def __init__(self) -> None:
        self.highest: dict[str, int] = {}  # keep this in your database
        self.lock = Lock()

    def deliver(self, event: dict, on_event) -> None:
        lane = (event.get("session") or {}).get("id", "")  # "" for the watcher's own events
        with self.lock:
            if event["sequence"] <= self.highest.get(lane, 0):
                return
            on_event(event)  # if this raises, the watcher retries and it runs again
            self.highest[lane] = event["sequence"]


def handle(event: dict) -> None:
    """Your code: here, print one line per event."""
    name = (event.get("session") or {}).get("title", "")
    print(event["sequence"], event["type"], name, flush=True)


def make_server(secret: str, port: int, on_event=handle) -> ThreadingHTTPServer:
    ordering = Ordering()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not signature_ok(secret, headers, body):
                self.send_response(401)  # permanent for the watcher: fix the secret
            else:
                event = json.loads(body)
                if event.get("version") == 1:
                    # A digest (type "digest") lists the events it held in "events".
                    ordering.deliver(event, on_event)
                self.send_response(204)  # a duplicate or stale update is acknowledged too
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", port), Receiver)


if __name__ == "__main__":
    make_server(os.environ["WEBHOOK_SECRET"], int(sys.argv[1])).serve_forever()
