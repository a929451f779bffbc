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


TEXT_LIMIT = 3000  # Slack refuses a section (or context element, or button URL) longer than this


def clip_escaped(text: str, budget: int) -> str:
    """`text` escaped, cut (with an ellipsis) so that the escaped form stays within `budget`
    characters and no entity is cut in half."""
    out: list[str] = []
    used = 0
    for ch in text:
        e = escape(ch)
        if used + len(e) > budget - 1:
            return "".join(out) + "…"
        out.append(e)
        used += len(e)
    return "".join(out)


def headline_lines(headlines: Sequence[Headline], limit: int = TEXT_LIMIT) -> str:
    """Up to five headlines (each cut to 400 characters once escaped) within Slack's section limit,
    each linked when it has a plain link and the link fits; a link never pushes a headline out."""
    head = "*Top negative headlines*"
    plain: list[str] = []
    linked: list[str] = []
    for h in headlines[:5]:
        text, url = clip_escaped(h.text, 400), safe_url(h.url)
        plain.append(f"\n• {text} ({h.p_bearish:.2f})")
        linked.append(f"\n• <{url}|{text}> ({h.p_bearish:.2f})" if url else plain[-1])
    lines = list(plain)  # five plain lines always fit (5 × ~415 characters)
    used = len(head) + sum(map(len, lines))
    for i, line in enumerate(linked):  # then links, in order, while they fit
        if used - len(lines[i]) + len(line) <= limit:
            used += len(line) - len(lines[i])
            lines[i] = line
    return head + "".join(lines)


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
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": headline_lines(headlines)}})
    if kibana and len(kibana) <= TEXT_LIMIT:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open in Kibana"}, "url": kibana}
                ],
            }
        )
    footer = escape(f"bearwatch alert {alert.id}")[:TEXT_LIMIT]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return fallback, blocks
