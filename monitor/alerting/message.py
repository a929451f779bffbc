"""The Slack message of an alert: Block Kit a person can act on, with every outside text escaped.

Headlines come from the news stream, so they are treated as text: ``&``, ``<`` and ``>`` are escaped
(Slack's mrkdwn has no other escape), which also defuses ``<!channel>``, ``<@U123>`` and
``<http://evil|click>`` written into a headline. Links we build ourselves are the only links.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from monitor.records import Alert
from monitor.schema import format_time

KIND_TITLES = {
    "negative_volume": "Negative news spike",
    "negative_share": "Negative share spike",
    "volume_burst": "News volume burst",
}
SEVERITY_ICONS = {"warning": ":large_yellow_circle:", "high": ":large_orange_circle:", "critical": ":red_circle:"}
STATUS_WORDS = {"opened": "", "updated": "", "ended": " — ended"}


def escape(text: str) -> str:
    """Slack mrkdwn escaping: the three characters that can start markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_url(url: str | None) -> str | None:
    """Only plain http(s) links without characters that could break out of <url|label>."""
    if not url or not url.startswith(("http://", "https://")) or any(c in url for c in "<>| \n\t"):
        return None
    return url


@dataclass(frozen=True)
class Headline:
    text: str
    url: str | None
    published_at: str
    p_bearish: float


def kibana_link(base: str | None, key: str, start: datetime, end: datetime) -> str | None:
    if not base:
        return None
    field, _, value = key.partition(":")
    query = "" if key == "all" else f'{"tickers" if field == "ticker" else field}:"{value}"'
    return (
        f"{base.rstrip('/')}/app/dashboards#/view/bearwatch-drilldown?_g=(time:(from:'{start.isoformat()}',to:'{end.isoformat()}'))"
        f"&_a=(query:(language:kuery,query:'{quote(query)}'))"
    )


def describe(alert: Alert) -> str:
    """Now vs baseline in words, in the unit of the alert's kind."""
    if alert.kind == "negative_share":
        return f"{alert.observed:.0%} of items negative vs {alert.baseline:.0%} usually"
    noun = "negative items" if alert.kind == "negative_volume" else "items"
    said = f"{alert.observed:.0f} {noun} in the window vs {alert.baseline:.1f} expected"
    if alert.shared_items:
        said += f" ({alert.shared_items} of them name several tickers and count for a share)"
    return said


def alert_blocks(alert: Alert, headlines: Sequence[Headline], kibana: str | None = None) -> tuple[str, list[dict]]:
    """(fallback text, blocks) for one alert of the outbox."""
    title = f"{KIND_TITLES.get(alert.kind, alert.kind)}{STATUS_WORDS.get(alert.status, '')}: {alert.key}"
    icon = SEVERITY_ICONS.get(alert.severity, "")
    fallback = escape(f"{title} — {describe(alert)} ({alert.severity})")
    facts = (
        f"*Severity:* {alert.severity}   *Now vs baseline:* {describe(alert)}\n"
        f"*Window:* {format_time(alert.window_start)} → {format_time(alert.window_end)}"
    )
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {escape(facts)}"}},
    ]
    if headlines:
        lines = []
        for h in headlines[:5]:
            text = escape(h.text[:300])
            url = safe_url(h.url)
            lines.append(f"• <{url}|{text}> ({h.p_bearish:.2f})" if url else f"• {text} ({h.p_bearish:.2f})")
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Top negative headlines*\n" + "\n".join(lines)}}
        )
    if kibana:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open in Kibana"}, "url": kibana}
                ],
            }
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(f"bearwatch alert {alert.id}")}]})
    return fallback, blocks
