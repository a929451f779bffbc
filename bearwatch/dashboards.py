"""The dashboards, defined once: Kibana saved objects (NDJSON) and the demo's HTML report are both
generated from the chart definitions below, and checked against the index mappings.

A :class:`Chart` names a data view, a kind (bars, lines, table, metric), its bucket columns (a date
histogram or top terms) and its metric columns (count — optionally filtered or time-shifted —,
average, last value). :func:`saved_objects` turns the dashboards into Kibana 8.x/9.x objects (Lens
visualizations, saved searches, data views, dashboards); :func:`validate` checks an NDJSON export
the way the CI does; :mod:`bearwatch.report` draws the same charts from local results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from monitor.indices import ALERTS, NEWS, mappings

DRILLDOWN_ID = "bearwatch-drilldown"  # the Slack alerts link here (monitor.alerting.message.kibana_link)
OVERVIEW_ID = "bearwatch-overview"
RECORDS = "___records___"  # Lens' source field of a count

LENS_VERSION, DASHBOARD_VERSION, SEARCH_VERSION, VIEW_VERSION = "8.9.0", "8.9.0", "8.0.0", "8.0.0"
# The Kibana core version the objects are written for: Kibana migrates them on import from here
# (as its own export writes it), instead of guessing from the type versions alone.
CORE_VERSION = "8.8.0"


@dataclass(frozen=True)
class DataView:
    id: str
    index: str  # mapping name (monitor.indices); the index pattern is <prefix>-<index>
    time_field: str
    name: str
    url_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bucket:
    op: str  # "date_histogram" or "terms"
    field: str
    label: str
    size: int = 10  # terms
    order_by: str | None = None  # terms: the metric column id it is ordered by


@dataclass(frozen=True)
class Metric:
    id: str
    op: str  # "count", "average" or "last_value"
    label: str
    field: str = RECORDS
    kql: str | None = None  # count only what matches
    shift: str | None = None  # "1d", "1w": the same window that long before
    percent: bool = False
    sort_field: str | None = None  # last_value


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    view: str
    kind: str  # "bar_stacked", "line", "table", "metric"
    metrics: tuple[Metric, ...]
    x: Bucket | None = None
    split: Bucket | None = None
    rows: tuple[Bucket, ...] = ()
    kql: str = ""  # the chart's own query


@dataclass(frozen=True)
class Search:
    id: str
    title: str
    view: str
    columns: tuple[str, ...]
    sort: str
    kql: str = ""


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    description: str
    panels: tuple[tuple[str, int, int, int, int], ...]  # (chart or search id, x, y, w, h) on Kibana's 48-column grid
    time_from: str | None = "now-24h"  # None: the time comes from the URL (the drill-down)
    refresh_ms: int = 60_000


VIEWS = (
    DataView("bearwatch-news-view", NEWS, "published_at", "bearwatch scored news", ("url",)),
    DataView("bearwatch-alerts-view", ALERTS, "window_start", "bearwatch alerts"),
)

NEG = "negative: true"
CHARTS = (
    Chart(
        "bearwatch-volume-by-topic",
        "News volume by topic",
        "bearwatch-news-view",
        "bar_stacked",
        (Metric("items", "count", "Items"),),
        x=Bucket("date_histogram", "published_at", "Published"),
        split=Bucket("terms", "topic", "Topic", size=8, order_by="items"),
    ),
    Chart(
        "bearwatch-negative-share-by-topic",
        "Negative share by topic",
        "bearwatch-news-view",
        "line",
        (Metric("share", "average", "Negative share", field="is_negative", percent=True),),
        x=Bucket("date_histogram", "published_at", "Published"),
        split=Bucket("terms", "topic", "Topic", size=6, order_by="share"),  # the most negative topics
    ),
    Chart(
        "bearwatch-negative-tickers",
        "Most negative tickers now vs. a day and a week before",
        "bearwatch-news-view",
        "table",
        (
            Metric("now", "count", "Negative items now", kql=NEG),
            Metric("day", "count", "A day before", kql=NEG, shift="1d"),
            Metric("week", "count", "A week before", kql=NEG, shift="1w"),
            Metric("share", "average", "Negative share now", field="is_negative", percent=True),
        ),
        rows=(Bucket("terms", "tickers", "Ticker", size=15, order_by="now"),),
    ),
    Chart(
        "bearwatch-alert-timeline",
        "Alerts by severity",
        "bearwatch-alerts-view",
        "bar_stacked",
        (Metric("alerts", "count", "Alerts"),),
        x=Bucket("date_histogram", "window_start", "Window start"),
        split=Bucket("terms", "severity", "Severity", size=3),
    ),
    Chart(
        "bearwatch-alert-keys",
        "Alerted keys",
        "bearwatch-alerts-view",
        "table",
        (Metric("alerts", "count", "Alerts"), Metric("score", "average", "Mean score", field="score")),
        rows=(Bucket("terms", "key", "Key", size=15, order_by="alerts"), Bucket("terms", "kind", "Kind", size=3)),
    ),
    Chart(
        "bearwatch-model-version",
        "Model in use",
        "bearwatch-news-view",
        "metric",
        (Metric("version", "last_value", "Model version", field="model_version", sort_field="scored_at"),),
    ),
    Chart(
        "bearwatch-sentiment-over-time",
        "Items by sentiment",
        "bearwatch-news-view",
        "bar_stacked",
        (Metric("items", "count", "Items"),),
        x=Bucket("date_histogram", "published_at", "Published"),
        split=Bucket("terms", "sentiment", "Sentiment", size=3),
    ),
    Chart(
        "bearwatch-negative-share",
        "Negative share",
        "bearwatch-news-view",
        "line",
        (Metric("share", "average", "Negative share", field="is_negative", percent=True),),
        x=Bucket("date_histogram", "published_at", "Published"),
    ),
)
SEARCHES = (
    Search(
        "bearwatch-negative-headlines",
        "Latest negative headlines",
        "bearwatch-news-view",
        ("headline", "tickers", "topic", "p_bearish", "source", "url"),
        "published_at",
        kql=NEG,
    ),
    Search(
        "bearwatch-headlines",
        "Headlines",
        "bearwatch-news-view",
        ("headline", "tickers", "sentiment", "p_bearish", "topic", "source", "url"),
        "published_at",
    ),
)
DASHBOARDS = (
    Dashboard(
        OVERVIEW_ID,
        "bearwatch — overview",
        "Volume and negative share by topic, the most negative tickers, alerts, "
        "the latest negative headlines and the model in use.",
        (
            ("bearwatch-volume-by-topic", 0, 0, 24, 14),
            ("bearwatch-negative-share-by-topic", 24, 0, 24, 14),
            ("bearwatch-negative-tickers", 0, 14, 24, 16),
            ("bearwatch-alert-timeline", 24, 14, 16, 16),
            ("bearwatch-model-version", 40, 14, 8, 8),
            ("bearwatch-alert-keys", 24, 30, 24, 14),
            ("bearwatch-negative-headlines", 0, 30, 24, 20),
        ),
    ),
    Dashboard(
        DRILLDOWN_ID,
        "bearwatch — drill-down",
        "One key (ticker:, topic: or all) over the alert's window: "
        "the link in a Slack alert sets the query and the time.",
        (
            ("bearwatch-sentiment-over-time", 0, 0, 24, 14),
            ("bearwatch-negative-share", 24, 0, 24, 14),
            ("bearwatch-headlines", 0, 14, 48, 22),
        ),
        time_from=None,
    ),
)


# --- Kibana saved objects --------------------------------------------------------------------------


def _column(metric: Metric | Bucket, charts_metrics: dict[str, str] | None = None) -> dict:
    if isinstance(metric, Bucket):
        if metric.op == "date_histogram":
            return {
                "label": metric.label,
                "dataType": "date",
                "operationType": "date_histogram",
                "sourceField": metric.field,
                "isBucketed": True,
                "scale": "interval",
                "customLabel": True,
                "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
            }
        order = (
            {"type": "column", "columnId": metric.order_by}
            if metric.order_by
            else {"type": "alphabetical", "fallback": True}
        )
        return {
            "label": metric.label,
            "dataType": "string",
            "operationType": "terms",
            "sourceField": metric.field,
            "isBucketed": True,
            "scale": "ordinal",
            "customLabel": True,
            "params": {
                "size": metric.size,
                "orderBy": order,
                "orderDirection": "desc" if metric.order_by else "asc",
                "otherBucket": True,
                "missingBucket": False,
                "parentFormat": {"id": "terms"},
            },
        }
    col: dict = {
        "label": metric.label,
        "customLabel": True,
        "isBucketed": False,
        "sourceField": metric.field,
        "operationType": metric.op,
    }
    if metric.op == "last_value":
        col.update(
            dataType="string", scale="ordinal", params={"sortField": metric.sort_field, "showArrayValues": False}
        )
    else:
        col.update(dataType="number", scale="ratio", params={"emptyAsNull": True})
    if metric.percent:
        col["params"]["format"] = {"id": "percent", "params": {"decimals": 0}}
    if metric.kql:
        col["filter"] = {"query": metric.kql, "language": "kuery"}
    if metric.shift:
        col["timeShift"] = metric.shift
    return col


def _lens(chart: Chart) -> dict:
    buckets = [b for b in (chart.x, chart.split, *chart.rows) if b is not None]
    ids = {id(b): f"b{i}" for i, b in enumerate(buckets)}
    columns = {ids[id(b)]: _column(b) for b in buckets}
    columns.update({m.id: _column(m) for m in chart.metrics})
    layer = "layer1"
    if chart.kind == "table":
        vis: dict[str, object] = {"layerId": layer, "layerType": "data", "columns": [{"columnId": c} for c in columns]}
        vtype = "lnsDatatable"
    elif chart.kind == "metric":
        vis = {"layerId": layer, "layerType": "data", "metricAccessor": chart.metrics[0].id}
        vtype = "lnsMetric"
    else:
        xy: dict[str, object] = {
            "layerId": layer,
            "layerType": "data",
            "seriesType": chart.kind,
            "xAccessor": ids[id(chart.x)],
            "accessors": [m.id for m in chart.metrics],
        }
        if chart.split:
            xy["splitAccessor"] = ids[id(chart.split)]
        vis = {
            "legend": {"isVisible": True, "position": "right"},
            "valueLabels": "hide",
            "preferredSeriesType": chart.kind,
            "fittingFunction": "None",
            "layers": [xy],
        }
        vtype = "lnsXY"
    return {
        "id": chart.id,
        "type": "lens",
        "typeMigrationVersion": LENS_VERSION,
        "coreMigrationVersion": CORE_VERSION,
        "attributes": {
            "title": chart.title,
            "description": "",
            "visualizationType": vtype,
            "state": {
                "datasourceStates": {
                    "formBased": {
                        "layers": {layer: {"columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}}
                    }
                },
                "visualization": vis,
                "query": {"query": chart.kql, "language": "kuery"},
                "filters": [],
                "internalReferences": [],
                "adHocDataViews": {},
            },
        },
        "references": [{"type": "index-pattern", "id": chart.view, "name": f"indexpattern-datasource-layer-{layer}"}],
    }


def _search(search: Search) -> dict:
    source = {
        "query": {"query": search.kql, "language": "kuery"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return {
        "id": search.id,
        "type": "search",
        "typeMigrationVersion": SEARCH_VERSION,
        "coreMigrationVersion": CORE_VERSION,
        "attributes": {
            "title": search.title,
            "description": "",
            "columns": list(search.columns),
            "sort": [[search.sort, "desc"]],
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
        },
        "references": [
            {"type": "index-pattern", "id": search.view, "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}
        ],
    }


def _view(view: DataView, prefix: str) -> dict:
    formats = {f: {"id": "url", "params": {"labelTemplate": "open"}} for f in view.url_fields}
    return {
        "id": view.id,
        "type": "index-pattern",
        "typeMigrationVersion": VIEW_VERSION,
        "coreMigrationVersion": CORE_VERSION,
        "attributes": {
            "title": f"{prefix}-{view.index}",
            "name": view.name,
            "timeFieldName": view.time_field,
            "fieldFormatMap": json.dumps(formats),
        },
        "references": [],
    }


def _dashboard(d: Dashboard, kinds: dict[str, str]) -> dict:
    panels, refs = [], []
    for n, (target, x, y, w, h) in enumerate(d.panels):
        pid = f"p{n}"
        panels.append(
            {
                "type": kinds[target],
                "version": DASHBOARD_VERSION,  # the panel's embeddable version, as Kibana writes it
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": pid},
                "panelIndex": pid,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{pid}",
            }
        )
        refs.append({"name": f"{pid}:panel_{pid}", "type": kinds[target], "id": target})
    attributes = {
        "title": d.title,
        "description": d.description,
        "panelsJSON": json.dumps(panels),
        "optionsJSON": json.dumps(
            {
                "useMargins": True,
                "syncColors": False,
                "syncCursor": True,
                "syncTooltips": False,
                "hidePanelTitles": False,
            }
        ),
        "timeRestore": d.time_from is not None,
        "kibanaSavedObjectMeta": {
            "searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
        },
    }
    if d.time_from is not None:
        attributes.update(timeFrom=d.time_from, timeTo="now", refreshInterval={"pause": False, "value": d.refresh_ms})
    return {
        "id": d.id,
        "type": "dashboard",
        "typeMigrationVersion": DASHBOARD_VERSION,
        "coreMigrationVersion": CORE_VERSION,
        "attributes": attributes,
        "references": refs,
    }


def saved_objects(prefix: str = "bearwatch") -> list[dict]:
    """Every saved object, referenced ones first (the order Kibana's import is happiest with)."""
    kinds = {c.id: "lens" for c in CHARTS} | {s.id: "search" for s in SEARCHES}
    return (
        [_view(v, prefix) for v in VIEWS]
        + [_lens(c) for c in CHARTS]
        + [_search(s) for s in SEARCHES]
        + [_dashboard(d, kinds) for d in DASHBOARDS]
    )


def ndjson(prefix: str = "bearwatch") -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in saved_objects(prefix))


# --- validation (what the CI checks) --------------------------------------------------------------

NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"}
AGGREGATABLE = NUMERIC | {"keyword", "date", "boolean", "ip"}


def flat_fields(mapping: dict, parent: str = "") -> dict[str, str]:
    """{dotted field name: type} of a mapping, multi-fields included."""
    out = {}
    for name, spec in mapping.get("properties", {}).items():
        full = f"{parent}{name}"
        if "properties" in spec:
            out.update(flat_fields(spec, full + "."))
            continue
        out[full] = spec.get("type", "object")
        for sub, sub_spec in spec.get("fields", {}).items():
            out[f"{full}.{sub}"] = sub_spec["type"]
    return out


def _kql_fields(kql: str) -> list[str]:
    """The field names of the simple `field: value` clauses our charts use."""
    import re

    return re.findall(r"([A-Za-z_][\w.]*)\s*:", kql or "")


def used_fields(objects: list[dict]) -> list[tuple[str, str, str, str]]:
    """(object id, data view id, field, what it is used for) for every field an object uses;
    what: date | bucket | numeric | any | search."""
    used = []
    for o in objects:
        a = o["attributes"]
        if o["type"] == "lens":
            view = o["references"][0]["id"]
            for layer in a["state"]["datasourceStates"]["formBased"]["layers"].values():
                for col in layer["columns"].values():
                    op, f = col["operationType"], col.get("sourceField")
                    if op == "date_histogram":
                        used.append((o["id"], view, f, "date"))
                    elif op == "terms":
                        used.append((o["id"], view, f, "bucket"))
                    elif op in ("average", "sum", "min", "max", "median"):
                        used.append((o["id"], view, f, "numeric"))
                    elif op == "last_value":
                        used.append((o["id"], view, f, "bucket"))
                        used.append((o["id"], view, col["params"]["sortField"], "date"))
                    for k in _kql_fields((col.get("filter") or {}).get("query", "")):
                        used.append((o["id"], view, k, "search"))
            for k in _kql_fields(a["state"]["query"]["query"]):
                used.append((o["id"], view, k, "search"))
        elif o["type"] == "search":
            view = o["references"][0]["id"]
            used += [(o["id"], view, c, "any") for c in a["columns"]]
            used += [(o["id"], view, s[0], "date") for s in a["sort"]]
            try:
                query = json.loads(a["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
            except (json.JSONDecodeError, KeyError, TypeError):
                query = ""  # reported by validate as a nested JSON problem
            used += [(o["id"], view, k, "search") for k in _kql_fields(query)]
        elif o["type"] == "index-pattern":
            used.append((o["id"], o["id"], a["timeFieldName"], "date"))
    return used


def validate(text: str, index_mappings: dict[str, dict] | None = None) -> list[str]:
    """Problems in an NDJSON export: lines that do not parse, nested JSON strings that do not,
    references that do not resolve, panels without their reference, and fields a chart uses that
    the mapping lacks or types wrongly. An empty list means it is good."""
    index_mappings = index_mappings or mappings()
    problems, objects = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: not JSON ({exc})")
    by_key = {(o.get("type"), o.get("id")): o for o in objects}
    views = {}
    for o in objects:
        where = f"{o.get('type')} {o.get('id')}"
        for missing in {"id", "type", "attributes", "references"} - set(o):
            problems.append(f"{where}: no {missing}")
        a = o.get("attributes", {})
        nested = [
            ("panelsJSON", a.get("panelsJSON")),
            ("optionsJSON", a.get("optionsJSON")),
            ("fieldFormatMap", a.get("fieldFormatMap")),
            ("searchSourceJSON", (a.get("kibanaSavedObjectMeta") or {}).get("searchSourceJSON")),
        ]
        parsed = {}
        for name, value in nested:
            if value is None:
                continue
            try:
                parsed[name] = json.loads(value)
            except (TypeError, json.JSONDecodeError) as exc:
                problems.append(f"{where}: {name} is not a JSON string ({exc})")
        for ref in o.get("references", []):
            if (ref.get("type"), ref.get("id")) not in by_key:
                problems.append(
                    f"{where}: reference {ref.get('name')} → {ref.get('type')} {ref.get('id')} is not in the file"
                )
        if o.get("type") == "dashboard":
            names = {r["name"] for r in o.get("references", [])}
            for panel in parsed.get("panelsJSON", []):
                if f"{panel['panelIndex']}:{panel['panelRefName']}" not in names:
                    problems.append(f"{where}: panel {panel['panelIndex']} has no reference")
        if o.get("type") == "lens" and a:
            layers = a["state"]["datasourceStates"]["formBased"]["layers"]
            names = {r["name"] for r in o.get("references", [])}
            for layer in layers:
                if f"indexpattern-datasource-layer-{layer}" not in names:
                    problems.append(f"{where}: layer {layer} has no data view reference")
        if o.get("type") == "index-pattern":
            title = a.get("title", "")
            name = title.rsplit("-", 1)[-1]
            if name not in index_mappings:
                problems.append(f"{where}: {title} is none of bearwatch's indices ({', '.join(index_mappings)})")
            else:
                views[o["id"]] = flat_fields(index_mappings[name])
    complete = [o for o in objects if {"id", "type", "attributes", "references"} <= set(o)]
    for obj, view, f, what in used_fields(complete):
        fields = views.get(view)
        if fields is None:
            continue  # reported above as an unresolved reference or an unknown index
        kind = fields.get(f)
        if kind is None:
            problems.append(f"{obj}: field {f} is not in the mapping of {view}")
        elif what == "date" and kind != "date":
            problems.append(f"{obj}: {f} is used as a time axis but is {kind}")
        elif what == "bucket" and kind not in AGGREGATABLE:
            problems.append(f"{obj}: {f} is used for buckets but is {kind} (not aggregatable)")
        elif what == "numeric" and kind not in NUMERIC:
            problems.append(f"{obj}: {f} is averaged but is {kind}")
    return problems


def fields_by_index(objects: Iterable[dict], prefix: str = "bearwatch") -> dict[str, set[tuple[str, str]]]:
    """{index: {(field, what)}}: what the real cluster must confirm (searchable, aggregatable)."""
    objects = list(objects)
    index_of = {o["id"]: o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    out: dict[str, set] = {}
    for _, view, f, what in used_fields(objects):
        out.setdefault(index_of[view], set()).add((f, what))
    return out


@dataclass
class FieldCapsReport:
    problems: list[str] = field(default_factory=list)
    checked: int = 0


def check_field_caps(client, objects: list[dict]) -> FieldCapsReport:
    """Ask Elasticsearch (`_field_caps`) whether every field the dashboards use is searchable, and
    aggregatable where it is bucketed, averaged or a time axis."""
    report = FieldCapsReport()
    for index, used in fields_by_index(objects).items():
        caps = client.field_caps(index=index, fields=sorted({f for f, _ in used}))["fields"]
        for f, what in sorted(used):
            report.checked += 1
            entry = next(iter(caps.get(f, {}).values()), None)
            if entry is None:
                report.problems.append(f"{index}: {f} is unknown to Elasticsearch")
            elif what == "any":
                continue  # a column of a saved search: shown from _source, needs neither
            elif what != "any" and not entry.get("searchable"):
                report.problems.append(f"{index}: {f} is not searchable")
            elif what in ("date", "bucket", "numeric") and not entry.get("aggregatable"):
                report.problems.append(f"{index}: {f} is not aggregatable")
    return report
