"""A static HTML report: the dashboards' charts (:mod:`bearwatch.dashboards`) computed from local
results and drawn as inline SVG, so a user without Kibana still sees the picture. No scripts, no
external assets: one file that opens anywhere.

The time range is the whole stream; "now" in the tickers table is its last 24 hours, as the
overview dashboard's default range is in Kibana.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

from bearwatch.dashboards import (
    CHARTS,
    DASHBOARDS,
    SEARCHES,
    VIEWS,
    Bucket,
    Chart,
    Metric,
    Search,
)

PALETTE = ("#54b399", "#6092c0", "#d36086", "#9170b8", "#ca8eae", "#d6bf57", "#b9a888", "#da8b45", "#aa6556", "#e7664c")
SHIFTS = {"1d": timedelta(days=1), "1w": timedelta(weeks=1)}
INTERVALS = (
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(weeks=1),
)
OTHER = "Other"


def _time(value) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _matches(doc: dict, kql: str | None) -> bool:
    """The `field: value` (AND-ed) queries the charts use; anything else is refused, not guessed."""
    if not kql:
        return True
    for clause in re.split(r"\s+and\s+", kql.strip(), flags=re.IGNORECASE):
        m = re.fullmatch(r'([\w.]+)\s*:\s*"?([^"]*)"?', clause.strip())
        if not m:
            raise ValueError(f"the report cannot evaluate the query {kql!r}")
        value = doc.get(m.group(1))
        values = value if isinstance(value, list) else [value]
        if m.group(2).lower() not in {str(v).lower() for v in values}:
            return False
    return True


class Frame:
    """The documents of one data view and the time range of the report."""

    def __init__(self, docs: list[dict], time_field: str, start: datetime, end: datetime) -> None:
        self.docs, self.time_field, self.start, self.end = docs, time_field, start, end

    def window(self, shift: timedelta = timedelta(0), start: datetime | None = None) -> list[dict]:
        lo, hi = (start or self.start) - shift, self.end - shift
        return [d for d in self.docs if lo <= _time(d[self.time_field]) <= hi]


def _metric(metric: Metric, docs: list[dict]) -> float | str | None:
    docs = [d for d in docs if _matches(d, metric.kql)]
    if metric.op == "count":
        return float(len(docs))
    if metric.op == "average":
        values = [float(d[metric.field]) for d in docs if d.get(metric.field) is not None]
        return sum(values) / len(values) if values else None
    if metric.op == "last_value":
        docs = [d for d in docs if d.get(metric.field) is not None]
        return str(max(docs, key=lambda d: str(d.get(metric.sort_field) or ""))[metric.field]) if docs else None
    raise ValueError(f"the report cannot compute {metric.op}")


def _values(doc: dict, f: str) -> list[str]:
    v = doc.get(f)
    return [str(x) for x in v] if isinstance(v, list) else ([] if v is None else [str(v)])


def _top_terms(bucket: Bucket, docs: list[dict], metrics: dict[str, Metric]) -> list[str]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        for v in _values(d, bucket.field):
            groups[v].append(d)
    order = metrics.get(bucket.order_by) if bucket.order_by else None
    key = (lambda kv: -float(_metric(order, kv[1]) or 0.0)) if order else (lambda kv: -len(kv[1]))
    return [k for k, _ in sorted(groups.items(), key=lambda kv: (key(kv), kv[0]))[: bucket.size]]


def _interval(start: datetime, end: datetime, buckets: int = 60) -> timedelta:
    return next((i for i in INTERVALS if (end - start) / i <= buckets), INTERVALS[-1])


def compute(chart: Chart, frame: Frame) -> dict:
    """The chart's numbers: {'x': [...], 'series': {name: [values]}} or {'columns', 'rows'} or {'value'}."""
    metrics = {m.id: m for m in chart.metrics}
    docs = [d for d in frame.window() if _matches(d, chart.kql)]
    if chart.kind == "metric":
        return {"value": _metric(chart.metrics[0], docs)}
    if chart.kind == "table":
        first, *more = chart.rows
        rows = []
        for term in _top_terms(first, docs, metrics):
            mine = [d for d in docs if term in _values(d, first.field)]
            subs = [(term,)] if not more else [(term, t) for t in _top_terms(more[0], mine, metrics)]
            for key in subs:
                cell_docs = mine if len(key) == 1 else [d for d in mine if key[1] in _values(d, more[0].field)]
                values = []
                for m in chart.metrics:
                    if m.shift:
                        day = frame.end - timedelta(days=1)
                        shifted = [
                            d for d in frame.window(SHIFTS[m.shift], start=day) if term in _values(d, first.field)
                        ]
                        values.append(_metric(m, shifted))
                    elif any(x.shift for x in chart.metrics):
                        values.append(
                            _metric(
                                m, [d for d in cell_docs if _time(d[frame.time_field]) >= frame.end - timedelta(days=1)]
                            )
                        )
                    else:
                        values.append(_metric(m, cell_docs))
                rows.append((*key, *values))
        return {
            "columns": [b.label for b in chart.rows] + [m.label for m in chart.metrics],
            "rows": rows,
            "percent": [False] * len(chart.rows) + [m.percent for m in chart.metrics],
        }
    assert chart.x is not None, f"{chart.id}: a time chart needs an x axis"
    step = _interval(frame.start, frame.end, 60 if chart.kind == "bar_stacked" else 24)  # shares need fuller buckets
    origin = datetime.fromtimestamp(
        (frame.start.timestamp() // step.total_seconds()) * step.total_seconds(), timezone.utc
    )
    n = int((frame.end - origin) / step) + 1
    xs = [origin + i * step for i in range(n)]
    split_terms = _top_terms(chart.split, docs, metrics) if chart.split else []
    cells: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for d in docs:
        i = int((_time(d[chart.x.field]) - origin) / step)
        names = (
            [v if v in split_terms else OTHER for v in _values(d, chart.split.field)]
            if chart.split
            else [chart.metrics[0].label]
        )
        for name in set(names) or {OTHER}:
            cells[(name, i)].append(d)
    names = (
        (split_terms + ([OTHER] if any(k[0] == OTHER for k in cells) else []))
        if chart.split
        else [chart.metrics[0].label]
    )
    series = {
        name: [_metric(chart.metrics[0], cells.get((name, i), [])) if cells.get((name, i)) else None for i in range(n)]
        for name in names
    }
    return {"x": xs, "series": series, "percent": chart.metrics[0].percent, "step": step}


# --- drawing --------------------------------------------------------------------------------------

W, H, PAD_L, PAD_B, PAD_T = 560, 240, 44, 28, 10


def _fmt(v, percent: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return html.escape(v)
    return f"{100 * v:.0f}%" if percent else (f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}")


def svg_xy(chart: Chart, data: dict) -> str:
    xs, series, kind = data["x"], data["series"], chart.kind
    n = max(1, len(xs))
    if kind == "bar_stacked":
        totals = [sum((s[i] or 0.0) for s in series.values()) for i in range(n)]
        top = max(totals + [1e-9])
    else:
        top = max([v for s in series.values() for v in s if v is not None] + [1e-9])
    if data["percent"]:
        top = max(top, 0.05)
    pw, ph = W - PAD_L - 10, H - PAD_B - PAD_T
    sx = lambda i: PAD_L + pw * (i + 0.5) / n  # noqa: E731
    sy = lambda v: PAD_T + ph * (1 - v / top)  # noqa: E731
    out = [
        f'<svg class="chart" data-chart="{chart.id}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{html.escape(chart.title)}">',
        f'<line x1="{PAD_L}" y1="{PAD_T + ph}" x2="{W - 10}" y2="{PAD_T + ph}" stroke="#98a2b3"/>',
    ]
    for frac in (0.5, 1.0):
        y = sy(top * frac)
        out.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" stroke="#eef0f3"/>'
            f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end" '
            f'class="tick">{_fmt(top * frac, data["percent"])}</text>'
        )
    for i in range(0, n, max(1, -(-n // 5))):  # at most 5 labels
        out.append(f'<text x="{sx(i):.1f}" y="{H - 8}" text-anchor="middle" class="tick">{xs[i]:%d %b %H:%M}</text>')
    base = [0.0] * n
    bw = max(1.0, pw / n * 0.8)
    for c, (name, values) in enumerate(series.items()):
        color = PALETTE[c % len(PALETTE)]
        if kind == "bar_stacked":
            for i, v in enumerate(values):
                if v:
                    y0, y1 = sy(base[i]), sy(base[i] + v)
                    out.append(
                        f'<rect x="{sx(i) - bw / 2:.1f}" y="{y1:.1f}" width="{bw:.1f}" height="{y0 - y1:.1f}" '
                        f'fill="{color}"><title>{html.escape(name)}: {_fmt(v)}</title></rect>'
                    )
                    base[i] += v
        else:
            points = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(values) if v is not None)
            if points:
                out.append(
                    f'<polyline points="{points}" fill="none" stroke="{color}" '
                    f'stroke-width="2"><title>{html.escape(name)}</title></polyline>'
                )
    out.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{PALETTE[c % len(PALETTE)]}"></i>{html.escape(name)}</span>'
        for c, name in enumerate(series)
    )
    return "".join(out) + f'<div class="legend">{legend}</div>'


def html_table(columns: list[str], rows: list[tuple], percent: list[bool] | None = None, chart_id: str = "") -> str:
    percent = percent or [False] * len(columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if str(cell).startswith('<a ') else _fmt(cell, p)}</td>" for cell, p in zip(r, percent))
        + "</tr>"
        for r in rows
    )
    body = body or "<tr><td>no data</td></tr>"
    return f'<table class="chart" data-chart="{chart_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def search_rows(search: Search, frame: Frame, limit: int = 25) -> tuple[list[str], list[tuple]]:
    docs = sorted(
        (d for d in frame.window() if _matches(d, search.kql)), key=lambda d: str(d.get(search.sort)), reverse=True
    )[:limit]
    rows = []
    for d in docs:
        row = []
        for c in search.columns:
            v = d.get(c)
            if c == "url" and v:
                row.append(f'<a href="{html.escape(str(v), quote=True)}" rel="noopener noreferrer">open</a>')
            else:
                row.append(", ".join(map(str, v)) if isinstance(v, list) else "" if v is None else str(v))
        rows.append(tuple(row))
    return [search.sort, *search.columns], [
        (str(d.get(search.sort))[:16].replace("T", " "), *r) for d, r in zip(docs, rows)
    ]


def render(news: list[dict], alerts: list[dict], title: str = "bearwatch report", note: str = "") -> str:
    """The overview dashboard as one HTML page."""
    news_view = next(v for v in VIEWS if v.index == "news")
    times = [_time(d[news_view.time_field]) for d in news] or [datetime.now(timezone.utc)]
    frames = {v.id: Frame(news if v.index == "news" else alerts, v.time_field, min(times), max(times)) for v in VIEWS}
    charts = {c.id: c for c in CHARTS}
    searches = {s.id: s for s in SEARCHES}
    overview = next(d for d in DASHBOARDS if d.time_from is not None)
    parts = []
    for target, *_ in sorted(overview.panels, key=lambda p: (p[2], p[1])):
        if target in charts:
            chart = charts[target]
            data = compute(chart, frames[chart.view])
            if chart.kind == "metric":
                body = f'<div class="metric chart" data-chart="{chart.id}">{_fmt(data["value"])}</div>'
            elif chart.kind == "table":
                body = html_table(data["columns"], data["rows"], data["percent"], chart.id)
            else:
                body = svg_xy(chart, data)
            wide = "wide" if chart.kind == "table" else ""
            parts.append(f'<section class="{wide}"><h2>{html.escape(chart.title)}</h2>{body}</section>')
        else:
            search = searches[target]
            columns, rows = search_rows(search, frames[search.view])
            table = html_table(columns, rows, chart_id=search.id)
            parts.append(f'<section class="wide"><h2>{html.escape(search.title)}</h2>{table}</section>')
    span = frames[VIEWS[0].id]
    counts = Counter(d.get("sentiment") for d in news)
    summary = (
        f"{len(news)} scored items from {span.start:%Y-%m-%d %H:%M} to {span.end:%Y-%m-%d %H:%M} UTC · "
        + " · ".join(f"{k} {v}" for k, v in counts.most_common())
        + f" · {len(alerts)} alert(s)"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2939;background:#f7f8fa}}
h1{{font-size:20px;margin:0 0 4px}} h2{{font-size:15px;margin:0 0 8px}} .sub{{color:#667085;margin-bottom:16px}}
main{{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}}
section{{background:#fff;border:1px solid #e4e7ec;border-radius:6px;padding:12px;flex:0 1 {W + 24}px;overflow:auto}}
section.wide{{flex:1 1 {W + 24}px}} .tick{{font-size:10px;fill:#667085}} .legend{{font-size:12px}}
.key{{margin-right:10px;white-space:nowrap}}
.key i{{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}}
.metric{{font-size:28px;font-weight:600;padding:16px 0}}
table{{border-collapse:collapse;font-size:12px;width:100%}}
th,td{{text-align:left;padding:3px 6px;border-bottom:1px solid #eef0f3;vertical-align:top}}
</style></head><body>
<h1>{html.escape(title)}</h1><div class="sub">{html.escape(summary)}{(" · " + html.escape(note)) if note else ""}</div>
<main>{"".join(parts)}</main>
</body></html>
"""
