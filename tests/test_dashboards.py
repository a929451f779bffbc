"""Kibana saved objects: generated, not hand-edited; valid against our mappings; confirmed by the real
Elasticsearch once real documents are indexed; importable through an API that answers as Kibana's."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bearwatch import dashboards
from bearwatch.kibana import import_saved_objects
from monitor.errors import KibanaError
from monitor.settings import Secret

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "dashboards" / "bearwatch.ndjson"


def lines(objects: list[dict]) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def test_the_committed_file_is_what_the_definitions_generate() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == dashboards.ndjson(), (
        "run: bearwatch dashboards export --output dashboards/bearwatch.ndjson"
    )


def test_the_saved_objects_validate_against_the_mappings() -> None:
    assert dashboards.validate(COMMITTED.read_text(encoding="utf-8")) == []
    objects = [json.loads(line) for line in COMMITTED.read_text().splitlines()]
    kinds = {o["type"] for o in objects}
    assert kinds == {"index-pattern", "lens", "search", "dashboard"}
    assert {o["id"] for o in objects if o["type"] == "dashboard"} == {dashboards.OVERVIEW_ID, dashboards.DRILLDOWN_ID}


def test_the_drilldown_is_the_dashboard_slack_links_to() -> None:
    from datetime import datetime, timezone

    from monitor.alerting.message import kibana_link

    link = kibana_link(
        "http://kibana:5601",
        "ticker:HLCY",
        datetime(2026, 11, 3, 9, tzinfo=timezone.utc),
        datetime(2026, 11, 3, 10, tzinfo=timezone.utc),
    )
    assert f"/view/{dashboards.DRILLDOWN_ID}?" in link
    drilldown = next(d for d in dashboards.DASHBOARDS if d.id == dashboards.DRILLDOWN_ID)
    assert drilldown.time_from is None  # the time comes from the link, not from the saved dashboard


def _mutate(fn) -> list[str]:
    objects = copy.deepcopy(dashboards.saved_objects())
    fn(objects)
    return dashboards.validate(lines(objects))


def _lens(objects: list[dict], chart_id: str) -> dict:
    o = next(o for o in objects if o["id"] == chart_id)
    return next(iter(o["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()))["columns"]


def test_validation_breaks_on_a_field_the_mapping_lacks_or_types_wrongly() -> None:
    def missing(objects):
        _lens(objects, "bearwatch-volume-by-topic")["b1"]["sourceField"] = "no_such_field"

    def time_axis_on_keyword(objects):
        _lens(objects, "bearwatch-volume-by-topic")["b0"]["sourceField"] = "topic"

    def average_of_keyword(objects):
        _lens(objects, "bearwatch-negative-share")["share"]["sourceField"] = "sentiment"

    def terms_on_text(objects):
        _lens(objects, "bearwatch-negative-tickers")["b0"]["sourceField"] = "headline"

    assert any("no_such_field is not in the mapping" in p for p in _mutate(missing))
    assert any("topic is used as a time axis but is keyword" in p for p in _mutate(time_axis_on_keyword))
    assert any("sentiment is averaged but is keyword" in p for p in _mutate(average_of_keyword))
    assert any("headline is used for buckets but is text" in p for p in _mutate(terms_on_text))


def test_validation_breaks_on_bad_json_and_dangling_references() -> None:
    def nested(objects):
        next(o for o in objects if o["type"] == "dashboard")["attributes"]["panelsJSON"] = "[{not json"

    def dangling(objects):
        objects[:] = [o for o in objects if o["id"] != "bearwatch-alert-timeline"]

    assert any("panelsJSON is not a JSON string" in p for p in _mutate(nested))
    assert any("bearwatch-alert-timeline is not in the file" in p for p in _mutate(dangling))
    assert any(p.startswith("line 2: not JSON") for p in dashboards.validate('{"id": 1}\n{oops\n'))


def test_the_cli_exports_and_validates(tmp_path: Path) -> None:
    out = tmp_path / "objects.ndjson"

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "bearwatch", "dashboards", *a], capture_output=True, text=True, timeout=60
        )

    assert run("export", "--out", str(out), "--index-prefix", "acme").returncode == 0
    assert '"title": "acme-news"' in out.read_text()
    assert run("validate", str(out)).returncode == 0
    broken = tmp_path / "broken.ndjson"
    broken.write_text(out.read_text().replace('"sourceField": "is_negative"', '"sourceField": "is_gloomy"'))
    result = run("validate", str(broken))
    assert result.returncode == 1 and "is_gloomy is not in the mapping" in result.stderr


@pytest.mark.services
def test_field_caps_confirm_every_field_once_real_documents_are_indexed(es_client, unique_name: str, demo_run) -> None:
    from elasticsearch import helpers

    from monitor.elastic.client import ensure_indices
    from monitor.indices import ALERTS, NEWS
    from monitor.settings import ElasticsearchSettings

    ensure_indices(es_client, ElasticsearchSettings(index_prefix=unique_name), embedding_dims=384)
    try:
        actions = [{"_index": f"{unique_name}-{NEWS}", "_id": d["id"], "_source": d} for d in demo_run.documents]
        actions += [{"_index": f"{unique_name}-{ALERTS}", "_id": a["id"], "_source": a} for a in demo_run.alerts]
        ok, errors = helpers.bulk(es_client, actions, refresh="wait_for", raise_on_error=False)
        assert not errors and ok == len(actions) and demo_run.alerts
        objects = dashboards.saved_objects(unique_name)
        report = dashboards.check_field_caps(es_client, objects)
        assert report.problems == [] and report.checked >= 15
        # and it would notice: a field no document has, and a text field bucketed
        broken = copy.deepcopy(objects)
        _lens(broken, "bearwatch-volume-by-topic")["b1"]["sourceField"] = "no_such_field"
        _lens(broken, "bearwatch-negative-tickers")["b0"]["sourceField"] = "headline"
        problems = dashboards.check_field_caps(es_client, broken).problems
        assert any("no_such_field is unknown" in p for p in problems) and any(
            "headline is not aggregatable" in p for p in problems
        )
    finally:
        for name in (NEWS, ALERTS, "labels", "state"):
            es_client.indices.delete(index=f"{unique_name}-{name}", ignore_unavailable=True)


class FakeKibana:
    """Answers POST /api/saved_objects/_import as Kibana does: kbn-xsrf required, auth checked,
    multipart parsed, per-object errors reported with success: false."""

    def __init__(self, api_key: str = "k3y", refuse: set[str] | None = None) -> None:
        self.received: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = fake.answer(self.path, dict(self.headers), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.api_key, self.refuse = api_key, refuse or set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        headers = {k.lower(): v for k, v in headers.items()}
        if headers.get("authorization") != f"ApiKey {self.api_key}":
            return 401, {
                "statusCode": 401,
                "error": "Unauthorized",
                "message": "[security_exception]: unable to authenticate",
            }
        if "kbn-xsrf" not in headers:
            return 400, {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "Request must contain a kbn-xsrf header.",
            }
        boundary = headers["content-type"].split("boundary=")[1].encode()
        part = next(p for p in body.split(b"--" + boundary) if b'name="file"' in p)
        objects = [
            json.loads(line)
            for line in part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n").decode().splitlines()
            if line.strip()
        ]
        self.received.append({"path": path, "objects": objects})
        errors = [
            {"id": o["id"], "type": o["type"], "error": {"type": "unknown"}} for o in objects if o["id"] in self.refuse
        ]
        return 200, {
            "success": not errors,
            "successCount": len(objects) - len(errors),
            **({"errors": errors} if errors else {}),
        }

    def close(self) -> None:
        self.server.shutdown()


def test_import_posts_the_objects_as_kibana_expects_and_reports_refusals() -> None:
    kibana = FakeKibana()
    try:
        answer = import_saved_objects(kibana.url, dashboards.ndjson(), api_key=Secret("k3y"), space="analysts")
        assert answer["successCount"] == len(dashboards.saved_objects())
        [got] = kibana.received
        assert got["path"] == "/s/analysts/api/saved_objects/_import?overwrite=true"
        assert got["objects"] == json.loads("[" + ",".join(dashboards.ndjson().splitlines()) + "]")
        kibana.refuse = {"bearwatch-alert-keys"}
        with pytest.raises(KibanaError, match="refused 1: lens bearwatch-alert-keys: unknown"):
            import_saved_objects(kibana.url, dashboards.ndjson(), api_key=Secret("k3y"))
        with pytest.raises(KibanaError, match="HTTP 401") as err:
            import_saved_objects(kibana.url, dashboards.ndjson(), api_key=Secret("wrong-secret-value"))
        assert "wrong-secret-value" not in str(err.value)
    finally:
        kibana.close()
    with pytest.raises(KibanaError, match="cannot be reached"):
        import_saved_objects(kibana.url, "{}\n", api_key=Secret("k3y"), timeout_s=2)


def test_objects_carry_their_versions_and_topics_are_split_by_a_metric() -> None:
    objects = dashboards.saved_objects()
    assert all(o["coreMigrationVersion"] and o["typeMigrationVersion"] for o in objects)
    for board in (o for o in objects if o["type"] == "dashboard"):
        assert all(p["version"] for p in json.loads(board["attributes"]["panelsJSON"]))
    share = next(o for o in objects if o["id"] == "bearwatch-negative-share-by-topic")
    (layer,) = share["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
    (topic,) = [c for c in layer["columns"].values() if c.get("sourceField") == "topic"]
    assert topic["params"]["orderBy"] == {"type": "column", "columnId": "share"}  # not alphabetical
    assert topic["params"]["orderDirection"] == "desc"


# Kibana's own schema for a dashboard's attributes (its dashboard plugin, saved-object model version 1,
# which forbids unknown keys; later versions add controlGroupInput options and sections), and for a
# panel's grid data (model version 3), restated: key -> (accepted types, required)
KIBANA_DASHBOARD_ATTRIBUTES = {
    "title": ((str,), True),
    "description": ((str,), False),
    "kibanaSavedObjectMeta": ((dict,), False),
    "timeRestore": ((bool,), False),
    "timeFrom": ((str,), False),
    "timeTo": ((str,), False),
    "refreshInterval": ((dict,), False),
    "controlGroupInput": ((dict,), False),
    "panelsJSON": ((str,), False),
    "optionsJSON": ((str,), False),
    "hits": ((int, float), False),
    "version": ((int, float), False),
}
KIBANA_REFRESH_INTERVAL = {"pause": ((bool,), True), "value": ((int, float), True), "display": ((str,), False)}
KIBANA_GRID_DATA = {
    "x": ((int, float), True),
    "y": ((int, float), True),
    "w": ((int, float), True),
    "h": ((int, float), True),
    "i": ((str,), True),
    "sectionId": ((str,), False),
}


def kibana_schema_errors(value: dict, schema: dict, where: str) -> list[str]:
    errors = [f"{where}.{k}: unknown to Kibana" for k in value if k not in schema]
    for key, (types, required) in schema.items():
        if key not in value:
            errors += [f"{where}.{key}: required"] if required else []
        elif isinstance(value[key], bool) and bool not in types or not isinstance(value[key], types):
            errors.append(f"{where}.{key}: {type(value[key]).__name__}, Kibana wants {types[0].__name__}")
    return errors


def test_dashboards_satisfy_kibanas_own_saved_object_schema() -> None:
    boards = [o for o in dashboards.saved_objects() if o["type"] == "dashboard"]
    assert boards
    for board in boards:
        a = board["attributes"]
        errors = kibana_schema_errors(a, KIBANA_DASHBOARD_ATTRIBUTES, board["id"])
        if "refreshInterval" in a:
            errors += kibana_schema_errors(a["refreshInterval"], KIBANA_REFRESH_INTERVAL, "refreshInterval")
        assert set(a.get("kibanaSavedObjectMeta", {})) <= {"searchSourceJSON"}
        for panel in json.loads(a["panelsJSON"]):
            errors += kibana_schema_errors(panel["gridData"], KIBANA_GRID_DATA, f"{board['id']} panel")
        assert errors == []
    # the check itself: a key Kibana forbids, a wrong type, a grid without its id
    broken = copy.deepcopy(boards[0]["attributes"])
    broken["owner"], broken["timeRestore"] = "desk", "yes"
    assert kibana_schema_errors(broken, KIBANA_DASHBOARD_ATTRIBUTES, "b") == [
        "b.owner: unknown to Kibana",
        "b.timeRestore: str, Kibana wants bool",
    ]
    assert kibana_schema_errors({"x": 0, "y": 0, "w": 1, "h": 1}, KIBANA_GRID_DATA, "p") == ["p.i: required"]
