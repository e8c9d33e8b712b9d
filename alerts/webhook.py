"""Webhook delivery: the alert as JSON, POSTed and signed.

Headers sent with every delivery:

* `X-Muck-Signature: sha256=<hex>`: HMAC-SHA256 with the subscription's secret over
  `<timestamp>.<body>` (the timestamp header, a dot, the raw body bytes). Signing the
  timestamp with the body stops a captured request from being replayed later.
* `X-Muck-Timestamp`: Unix seconds when this attempt was sent.
* `X-Muck-Idempotency-Key`: the same on every retry of the same alert (and in the body as
  `idempotency_key`): a receiver that has seen it drops the duplicate.

Any 2xx answer is success; anything else, or no answer, is retried by the dispatcher.

Each sending thread keeps one HTTP/1.1 connection per receiver open between alerts (a POST
on a kept connection costs a quarter of one on a new connection: no handshake, no
teardown), and opens a new one when the receiver closed it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
import time
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Muck-Signature"
TIMESTAMP_HEADER = "X-Muck-Timestamp"
KEY_HEADER = "X-Muck-Idempotency-Key"


class WebhookError(RuntimeError):
    """The receiver did not take the alert (retried)."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Muck-Signature` value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, header: str, *, tolerance_s: float = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), header)


_local = threading.local()


def _connection(scheme: str, netloc: str, timeout_s: float) -> tuple[Any, bool]:
    """This thread's connection to the receiver, and whether it was used before."""
    pool = _local.__dict__.setdefault("connections", {})
    conn = pool.get((scheme, netloc))
    if conn is not None:
        return conn, True
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = pool[(scheme, netloc)] = cls(netloc, timeout=timeout_s)
    return conn, False


def _drop(scheme: str, netloc: str) -> None:
    conn = _local.__dict__.get("connections", {}).pop((scheme, netloc), None)
    if conn is not None:
        conn.close()


def post(url: str, secret: str, body: bytes, key: str, timeout_s: float) -> int:
    """POST the signed alert (its JSON `body`, its idempotency `key`); the HTTP status on 2xx,
    WebhookError otherwise."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "MuckWatch-Alerts/1",
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        KEY_HEADER: key,
    }
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for _ in range(2):
        conn, reused = _connection(parts.scheme, parts.netloc, timeout_s)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
        except (http.client.HTTPException, OSError) as exc:
            _drop(parts.scheme, parts.netloc)
            # A kept connection the receiver closed while idle: once more on a new one.
            if reused and not isinstance(exc, TimeoutError):
                continue
            raise WebhookError(
                f"no answer from the receiver: {exc or type(exc).__name__}"
            ) from None
        if response.will_close:
            _drop(parts.scheme, parts.netloc)
        if 200 <= response.status < 300:
            return response.status
        raise WebhookError(f"HTTP {response.status} from the receiver")
    raise WebhookError("no answer from the receiver")
