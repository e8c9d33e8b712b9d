"""Who wants which violations, and how they are told.

A subscription belongs to a dashboard user (by user name; web checks that the user exists,
since web_users is web's table) or to a team (a name for a group sharing a webhook or a
group robot). It filters on violation kinds, severities, districts and companies — an empty
filter matches everything — and on the violation events it wants (by default only
`detected`: a new violation). It has one delivery channel:

* `feed`     the user's live feed in the dashboard (users only);
* `webhook`  a JSON POST signed with HMAC-SHA256 (alerts/webhook.py);
* `wecom`, `dingtalk`, `email`, `apprise`: a message through apprise (alerts/channels.py),
  the target being an apprise URL (`wecombot://…`, `dingtalk://…`, `mailto://…`).

Subscriptions are never deleted: removing one deactivates it and cancels what it still had
to deliver, so the outbox keeps its history.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from compliance.violations import KINDS, TRANSITIONS

CHANNELS = ("feed", "webhook", "wecom", "dingtalk", "email", "apprise")
APPRISE_CHANNELS = ("wecom", "dingtalk", "email", "apprise")
OWNER_KINDS = ("user", "team")
SEVERITIES = ("notice", "minor", "serious")
# A subscription naming no severities is told of these: a notice (going dark while parked
# empty in a site) asks for a look, not an alert, unless asked for by name.
DEFAULT_SEVERITIES = ("minor", "serious")
# What can happen to a violation (violation_events.action).
EVENTS = ("detected", "ended", "revised", "withdrawn", "replay_disagrees", *TRANSITIONS)
DEFAULT_EVENTS = ("detected",)
_DISTRICT = re.compile(r"^\d{6}$")
_OWNER = re.compile(r"^[A-Za-z0-9_.@\-\u4e00-\u9fff]{1,64}$")


class SubscriptionError(ValueError):
    """A subscription that cannot be stored; the message says which field and why."""


@dataclass
class Subscription:
    id: int
    owner_kind: str
    owner: str
    channel: str
    target: str = ""
    secret: str = ""
    kinds: list[str] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)
    districts: list[str] = field(default_factory=list)
    company_ids: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS))
    active: bool = True
    created_by: str | None = None
    created_at: Any = None

    def matches(self, event: str, violation: dict, at: Any = None) -> bool:
        """Whether an event of this violation (that happened `at`) is one this subscription
        wants: nothing from before the subscription existed."""
        return (
            (at is None or self.created_at is None or at >= self.created_at)
            and (not self.events or event in self.events)
            and (not self.kinds or violation["kind"] in self.kinds)
            and violation["severity"] in (self.severities or DEFAULT_SEVERITIES)
            and (not self.districts or violation.get("district_code") in self.districts)
            and (not self.company_ids or violation.get("company_id") in self.company_ids)
        )

    def describe(self) -> str:
        """One line for the CLI (the secret is never shown)."""

        def part(name: str, values: Sequence) -> str:
            return f"{name}={','.join(map(str, values))}" if values else f"{name}=all"

        return " ".join(
            [
                f"#{self.id}",
                f"{self.owner_kind}:{self.owner}",
                self.channel + (f"→{self.target}" if self.target else ""),
                part("kinds", self.kinds),
                part("severities", self.severities),
                part("districts", self.districts),
                part("companies", self.company_ids),
                part("events", self.events),
                "" if self.active else "(removed)",
            ]
        ).strip()


_COLUMNS = (
    "id, owner_kind, owner, channel, target, secret, kinds, severities, districts, "
    "company_ids, events, active, created_by, created_at"
)


def _clean(values: Iterable | None) -> list[str]:
    return sorted({str(v).strip() for v in values or () if str(v).strip()})


def _check_target(channel: str, target: str, secret: str) -> tuple[str, str]:
    target = (target or "").strip()
    if channel == "feed":
        return "", ""
    if not target:
        raise SubscriptionError(f"target: a {channel} subscription needs a URL")
    if channel == "webhook":
        url = urlparse(target)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SubscriptionError("target: a webhook URL starts with http:// or https://")
        # The receiver checks the signature with it: generated when none is given.
        secret = (secret or "").strip() or secrets.token_hex(32)
        if len(secret) < 16:
            raise SubscriptionError("secret: at least 16 characters")
        return target, secret
    from alerts.channels import check_apprise_url

    check_apprise_url(target)
    return target, ""


def create_subscription(
    cur,
    *,
    owner_kind: str,
    owner: str,
    channel: str,
    target: str = "",
    secret: str = "",
    kinds: Iterable[str] | None = None,
    severities: Iterable[str] | None = None,
    districts: Iterable[str] | None = None,
    company_ids: Iterable[int] | None = None,
    events: Iterable[str] | None = None,
    created_by: str | None = None,
) -> Subscription:
    """Validate and store a subscription; SubscriptionError names the bad field."""
    if owner_kind not in OWNER_KINDS:
        raise SubscriptionError(f"owner: a user or a team, not {owner_kind!r}")
    owner = (owner or "").strip()
    if not _OWNER.match(owner):
        raise SubscriptionError("owner: 1-64 letters, digits or _ . @ -")
    if channel not in CHANNELS:
        raise SubscriptionError(f"channel: one of {', '.join(CHANNELS)}")
    if owner_kind == "team" and channel == "feed":
        raise SubscriptionError("channel: a team has no feed; its members subscribe themselves")
    target, secret = _check_target(channel, target, secret)
    kinds, severities, districts = _clean(kinds), _clean(severities), _clean(districts)
    events = _clean(DEFAULT_EVENTS if events is None else events)
    for name, values, allowed in (
        ("kinds", kinds, KINDS),
        ("severities", severities, SEVERITIES),
        ("events", events, EVENTS),
    ):
        wrong = [v for v in values if v not in allowed]
        if wrong:
            raise SubscriptionError(
                f"{name}: unknown {', '.join(wrong)}; expected {', '.join(allowed)}"
            )
    wrong = [d for d in districts if not _DISTRICT.match(d)]
    if wrong:
        raise SubscriptionError(f"districts: {', '.join(wrong)} is not a 6-digit district code")
    try:
        companies = sorted({int(c) for c in company_ids or ()})
    except (TypeError, ValueError):
        raise SubscriptionError("companies: company ids are numbers") from None
    if companies:
        cur.execute("SELECT id FROM companies WHERE id = ANY(%s)", (companies,))
        missing = set(companies) - {row[0] for row in cur.fetchall()}
        if missing:
            raise SubscriptionError(f"companies: no company {', '.join(map(str, missing))}")
    cur.execute(
        f"""INSERT INTO alert_subscriptions (owner_kind, owner, channel, target, secret, kinds,
                severities, districts, company_ids, events, created_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}""",  # noqa: S608
        (
            owner_kind,
            owner,
            channel,
            target,
            secret,
            kinds,
            severities,
            districts,
            companies,
            events,
            created_by,
        ),
    )
    return Subscription(*cur.fetchone())


def list_subscriptions(
    cur,
    *,
    owner_kind: str | None = None,
    owner: str | None = None,
    include_removed: bool = False,
) -> list[Subscription]:
    cur.execute(
        f"""SELECT {_COLUMNS} FROM alert_subscriptions
            WHERE (%(kind)s::text IS NULL OR owner_kind = %(kind)s)
              AND (%(owner)s::text IS NULL OR owner = %(owner)s)
              AND (%(all)s OR active)
            ORDER BY owner_kind, owner, id""",  # noqa: S608
        {"kind": owner_kind, "owner": owner, "all": include_removed},
    )
    return [Subscription(*row) for row in cur.fetchall()]


def get_subscription(cur, subscription_id: int) -> Subscription | None:
    cur.execute(
        f"SELECT {_COLUMNS} FROM alert_subscriptions WHERE id = %s",  # noqa: S608
        (subscription_id,),
    )
    row = cur.fetchone()
    return Subscription(*row) if row else None


def remove_subscription(cur, subscription_id: int, *, owner: str | None = None) -> bool:
    """Deactivate it (only the owner's own when `owner` is given) and cancel its pending
    deliveries. False when there is no such active subscription."""
    cur.execute(
        """UPDATE alert_subscriptions SET active = false
           WHERE id = %s AND active AND (%s::text IS NULL OR (owner_kind = 'user' AND owner = %s))
           RETURNING id""",
        (subscription_id, owner, owner),
    )
    if cur.fetchone() is None:
        return False
    cur.execute(
        """UPDATE alert_outbox SET status = 'cancelled', last_error = 'subscription removed'
           WHERE subscription_id = %s AND status = 'pending'""",
        (subscription_id,),
    )
    return True
