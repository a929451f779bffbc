"""The Slack message of an alert: Block Kit a person can act on, with every outside text escaped.

Headlines come from the news stream, so they are treated as text: ``&``, ``<`` and ``>`` are escaped
(Slack's mrkdwn has no other escape), which also defuses ``<!channel>``, ``<@U123>`` and
``<http://evil|click>`` written into a headline. Links we build ourselves are the only links.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
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
    model_version: str | None = None  # the model that scored it
    item_id: str | None = None  # the scored item (what a "wrong sentiment" answer labels)


def kibana_link(base: str | None, key: str, start: datetime, end: datetime) -> str | None:
    if not base:
        return None
    field, _, value = key.partition(":")
    query = "" if key == "all" else f'{"tickers" if field == "ticker" else field}:"{value}"'
    # Times as UTC with a Z: a "+00:00" offset would reach Kibana as " 00:00" (URL parsing makes a
    # + a space). A Kibana space is part of the base URL (https://kibana.example/s/<space>).
    return (
        f"{base.rstrip('/')}/app/dashboards#/view/bearwatch-drilldown"
        f"?_g=(time:(from:'{format_time(start)}',to:'{format_time(end)}'))"
        f"&_a=(query:(language:kuery,query:'{quote(query)}'))"
    )


def count(x: float) -> str:
    """A count as a person writes it: 7, or 6.5 when items that name many tickers count a share."""
    return f"{round(x, 1):g}"


def duration(minutes: float) -> str:
    """15 min, 4 h, 1 h 30 min, 2 d 3 h."""
    m = round(minutes)
    if m < 60:
        return f"{m} min"
    d, h, m = m // 1440, m % 1440 // 60, m % 60
    parts = [f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min" if m and not d else ""]
    return " ".join(p for p in parts if p)


def describe(alert: Alert) -> str:
    """Now vs baseline in words, in the unit of the alert's kind, with the window's counts."""
    within = f" in {duration(alert.window_minutes)}" if alert.window_minutes else " in the window"
    if alert.kind == "negative_share":
        said = (
            f"{count(alert.negatives)} of {count(alert.items)} items negative ({alert.observed:.0%}){within}"
            if alert.items
            else f"{alert.observed:.0%} of items negative{within}"
        ) + f" vs {alert.baseline:.0%} usually"
    elif alert.kind == "negative_volume":
        of = f" of {count(alert.items)}" if alert.items else ""
        said = f"{count(alert.observed)}{of} items negative{within} vs {alert.baseline:.1f} negative expected"
    else:
        said = f"{count(alert.observed)} items{within} vs {alert.baseline:.1f} expected"
    if alert.shared_items:
        said += f" ({alert.shared_items} of them name several tickers and count for a share)"
    return said


TEST_NAMES = {
    "negative_volume": "negative count (Poisson tail vs this key's baseline)",
    "negative_share": "negative share (binomial tail vs this key's usual share)",
    "volume_burst": "all-news volume (Poisson tail vs its baseline)",
}


def significance(alert: Alert) -> str:
    """Which test fired, the others that agreed, and how unlikely the window is under the baseline."""
    p = f"p = {alert.p_value:.1e}" if alert.p_value > 0 else "p < 1e-300"
    others = [TEST_NAMES.get(t, t).split(" (")[0] for t in alert.tests if t != alert.kind]
    also = f"; also {', '.join(others)}" if others else ""
    return f"{TEST_NAMES.get(alert.kind, alert.kind)}, {p}{also}"


def lasted(alert: Alert) -> str:
    return duration((alert.window_end - alert.window_start).total_seconds() / 60)


def slack_date(t: datetime, token: str = "{date_short_pretty} {time}") -> str:
    """A time Slack shows in each reader's own zone, with a UTC fallback for clients that cannot."""
    return f"<!date^{int(t.timestamp())}^{token}|{t.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC>"


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
    head = "*Top negative headlines* (in brackets: the model's probability that each is bearish)"
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


def answer_controls(alert: Alert, headlines: Sequence[Headline]) -> list[dict]:
    """The "False alarm" button and the "Wrong sentiment" menu (monitor/alerting/feedback.py)."""
    from monitor.alerting.feedback import CORRECTIONS, FALSE_ALARM, WRONG_SENTIMENT

    controls: list[dict] = [
        {
            "type": "button",
            "action_id": FALSE_ALARM,
            "text": {"type": "plain_text", "text": "False alarm"},
            "value": alert.id[:2000],
            "confirm": {
                "title": {"type": "plain_text", "text": "Mark as a false alarm?"},
                "text": {"type": "plain_text", "text": "The verdict is kept with the alert, by your name."},
                "confirm": {"type": "plain_text", "text": "False alarm"},
                "deny": {"type": "plain_text", "text": "Cancel"},
            },
        }
    ]
    options = [
        {
            # plain text, at most 75 characters: Slack's limit for an option's text
            "text": {"type": "plain_text", "text": f"#{n} is {better}: {h.text}"[:75]},
            "value": f"{h.item_id}|{better}"[:150],
        }
        for n, h in enumerate(headlines[:5], 1)
        if h.item_id and len(h.item_id) < 140
        for better in CORRECTIONS
    ]
    if options:
        controls.append(
            {
                "type": "static_select",
                "action_id": WRONG_SENTIMENT,
                "placeholder": {"type": "plain_text", "text": "Wrong sentiment…"},
                "options": options,
            }
        )
    return controls


def alert_blocks(
    alert: Alert, headlines: Sequence[Headline], kibana: str | None = None, answers: bool = False
) -> tuple[str, list[dict]]:
    """(fallback text, blocks) for one alert of the outbox, as the episode stands now; `answers`:
    with the controls analysts answer with (when the Slack app's signing secret is set)."""
    title = f"{KIND_TITLES.get(alert.kind, alert.kind)}{STATUS_WORDS.get(alert.status, '')}: {alert.key}"
    icon = SEVERITY_ICONS.get(alert.severity, "")
    fallback = escape(f"{title} — {describe(alert)} ({alert.severity})")
    since = slack_date(alert.window_start)
    state = (
        f"ended {slack_date(alert.window_end)}, after {lasted(alert)}"
        if alert.status == "ended"
        else f"ongoing, since {since}"
    )
    facts = (
        f"{icon} *Severity:* {escape(alert.severity)}   *Status:* {state}\n"
        f"*Now vs baseline:* {escape(describe(alert))}\n"
        f"*Test:* {escape(significance(alert))}\n"
        f"*Window:* {since} → {slack_date(alert.window_end)}"
    )
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": facts[:TEXT_LIMIT]}},
    ]
    if headlines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": headline_lines(headlines)}})
    elements: list[dict] = []
    if kibana and len(kibana) <= TEXT_LIMIT:
        elements.append({"type": "button", "text": {"type": "plain_text", "text": "Open in Kibana"}, "url": kibana})
    if answers:
        elements += answer_controls(alert, headlines)
    if elements:
        blocks.append({"type": "actions", "elements": elements})
    models = sorted({h.model_version for h in headlines if h.model_version})
    scored_by = f" · scored by model {', '.join(models)}" if models else ""
    footer = escape(f"bearwatch alert {alert.id}{scored_by}")[:TEXT_LIMIT]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return fallback, blocks


def followup_blocks(alert: Alert) -> tuple[str, list[dict]]:
    """(fallback text, blocks) of a thread reply: the episode escalated, or ended."""
    icon = SEVERITY_ICONS.get(alert.severity, "")
    if alert.status == "ended":
        said = f"Ended {slack_date(alert.window_end)}, after {lasted(alert)}; it peaked at {escape(alert.severity)}."
        fallback = f"Ended: {alert.key}, after {lasted(alert)} (peak {alert.severity})"
    else:
        said = (
            f"{icon} *Escalated to {escape(alert.severity)}* at {slack_date(alert.window_end, '{time}')}: "
            f"{escape(describe(alert))}\n{escape(significance(alert))}"
        )
        fallback = f"Escalated to {alert.severity}: {alert.key} — {describe(alert)}"
    return escape(fallback), [{"type": "section", "text": {"type": "mrkdwn", "text": said[:TEXT_LIMIT]}}]
