"""Webhook delivery: the alert as JSON, POSTed and signed.

Headers sent with every delivery:

* `X-Muck-Signature: sha256=<hex>`: HMAC-SHA256 with the subscription's secret over
  `<timestamp>.<body>` (the timestamp header, a dot, the raw body bytes). Signing the
  timestamp with the body stops a captured request from being replayed later.
* `X-Muck-Timestamp`: Unix seconds when this attempt was sent.
* `X-Muck-Idempotency-Key`: the same on every retry of the same alert (and in the body as
  `idempotency_key`): a receiver that has seen it drops the duplicate.

Any 2xx answer is success; anything else, or no answer, is retried by the dispatcher.

Sent with libcurl (pycurl): each sending thread keeps one curl handle, whose connection to
the receiver stays open between alerts and is opened again when the receiver closed it. Not
`http.client`: it writes the headers and the body in two system calls and parses the answer
with the e-mail parser, 220 µs of CPU per alert against libcurl's 110 µs (measured on this
machine, docs/performance.md) — at a burst of 2,000 alerts beside 10,000 msg/s of ingestion,
that CPU is what decides when the last one arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

import certifi
import pycurl

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
_ANSWER_LIMIT = 65536  # bytes of a receiver's answer read (and thrown away)


def _handle() -> pycurl.Curl:
    """This thread's curl handle (its connection cache keeps receivers' connections)."""
    curl = getattr(_local, "curl", None)
    if curl is None:
        curl = _local.curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: we run in threads
        curl.setopt(pycurl.CAINFO, certifi.where())
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.USERAGENT, "MuckWatch-Alerts/1")
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    return curl


def post(url: str, secret: str, body: bytes, key: str, timeout_s: float) -> int:
    """POST the signed alert (its JSON `body`, its idempotency `key`); the HTTP status on 2xx,
    WebhookError otherwise."""
    timestamp = str(int(time.time()))
    headers = [
        "Content-Type: application/json; charset=utf-8",
        f"{SIGNATURE_HEADER}: {signature(secret, timestamp, body)}",
        f"{TIMESTAMP_HEADER}: {timestamp}",
        f"{KEY_HEADER}: {key}",
        "Expect:",  # no 100-continue round trip before the body
    ]
    answer = bytearray()

    def keep(chunk: bytes) -> int | None:
        if len(answer) < _ANSWER_LIMIT:
            answer.extend(chunk[: _ANSWER_LIMIT - len(answer)])
        return None

    curl = _handle()
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.HTTPHEADER, headers)
    curl.setopt(pycurl.POSTFIELDS, body)
    curl.setopt(pycurl.TIMEOUT_MS, int(timeout_s * 1000))
    curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(timeout_s * 1000))
    curl.setopt(pycurl.WRITEFUNCTION, keep)
    try:
        curl.perform()
    except pycurl.error as exc:
        code, message = exc.args if len(exc.args) == 2 else (0, str(exc))
        raise WebhookError(f"no answer from the receiver: {message or code}") from None
    status = curl.getinfo(pycurl.RESPONSE_CODE)
    if 200 <= status < 300:
        return status
    raise WebhookError(f"HTTP {status} from the receiver")
