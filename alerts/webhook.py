"""Webhook delivery: the alert as JSON, POSTed and signed.

Headers sent with every delivery:

* `X-Muck-Signature: sha256=<hex>`: HMAC-SHA256 with the subscription's secret over
  `<timestamp>.<body>` (the timestamp header, a dot, the raw body bytes). Signing the
  timestamp with the body stops a captured request from being replayed later.
* `X-Muck-Timestamp`: Unix seconds when this attempt was sent.
* `X-Muck-Idempotency-Key`: the same on every retry of the same alert (and in the body as
  `idempotency_key`): a receiver that has seen it drops the duplicate.

Any 2xx answer is success; anything else, or no answer, is retried by the dispatcher.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

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


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def post(url: str, secret: str, payload: dict[str, Any], timeout_s: float) -> int:
    """POST the signed alert; the HTTP status on 2xx, WebhookError otherwise."""
    body = encode(payload)
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "MuckWatch-Alerts/1",
            SIGNATURE_HEADER: signature(secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            KEY_HEADER: payload["idempotency_key"],
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read(65536)
            return response.status
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"HTTP {exc.code} from the receiver") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"no answer from the receiver: {reason}") from None
