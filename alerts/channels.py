"""Group robots and e-mail through apprise: WeCom (`wecombot://KEY`), DingTalk
(`dingtalk://TOKEN/` or `dingtalk://SECRET@TOKEN/`), e-mail (`mailto://user:pass@host`), or
any other apprise URL (`json://host/path` posts the message as JSON, which the tests use
against a local HTTP server). apprise does the protocols; this module only words the
message and turns a failure into an exception the dispatcher can retry."""

from __future__ import annotations

from typing import Any

import apprise


class ChannelError(RuntimeError):
    """A delivery that did not go through (retried by the dispatcher)."""


def check_apprise_url(url: str) -> None:
    """Raise the subscriptions' error when apprise does not know the URL."""
    from alerts.subscriptions import SubscriptionError

    if not apprise.Apprise().add(url):
        raise SubscriptionError(
            "target: not an apprise URL (e.g. wecombot://KEY, dingtalk://TOKEN/, "
            "mailto://user:pass@host)"
        )


def message(payload: dict[str, Any]) -> tuple[str, str]:
    """(title, body) of an alert, in Chinese (group robots are read by people in the city)."""
    v = payload["violation"]
    title = f"【{payload['event_label']}】{v['kind_label']} {v['plate']}"
    lines = [
        f"违规类型：{v['kind_label']}（{'严重' if v['severity'] == 'serious' else '一般'}）",
        f"车牌号码：{v['plate']}",
        f"运输企业：{v.get('company') or '—'}",
        f"开始时间：{v['started_local']}（{payload['timezone']}）",
    ]
    if v.get("district_code"):
        lines.append(f"行政区：{v['district_code']}")
    if v.get("worst_value") is not None:
        lines.append(f"最大值：{v['worst_value']:.1f} {v.get('worst_unit') or ''}".rstrip())
    lines.append(f"查看：{payload['url']}")
    return title, "\n".join(lines)


def send_apprise(url: str, payload: dict[str, Any], timeout_s: float) -> None:
    """Deliver one alert through apprise; ChannelError when it did not go through."""
    sender = apprise.Apprise()
    if not sender.add(url):
        raise ChannelError("not an apprise URL")
    title, body = message(payload)
    kind = apprise.NotifyType.WARNING if payload["event"] == "detected" else apprise.NotifyType.INFO
    result = sender.notify(body, title=title, notify_type=kind, timeout=timeout_s)
    if not result:
        raise ChannelError(f"apprise: {result.failed_count} of 1 failed ({result.status.name})")
