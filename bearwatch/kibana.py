"""Importing saved objects through Kibana's API (`POST /api/saved_objects/_import?overwrite=true`).

The request is what Kibana documents: a multipart form with the NDJSON as `file`, the `kbn-xsrf`
header, and an API key or basic auth. Kibana answers 200 even when some objects failed
(``success: false`` with ``errors``); both that and an HTTP error become a :class:`KibanaError`
that says which objects and why. Credentials never appear in errors.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid

from monitor.errors import KibanaError
from monitor.settings import Secret


def import_saved_objects(
    url: str,
    ndjson: str,
    api_key: Secret | None = None,
    username: str | None = None,
    password: Secret | None = None,
    space: str | None = None,
    timeout_s: float = 60.0,
) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bearwatch.ndjson"\r\n'
        f"Content-Type: application/ndjson\r\n\r\n{ndjson}\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"kbn-xsrf": "bearwatch", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    if api_key is not None:
        headers["Authorization"] = f"ApiKey {api_key.reveal()}"
    elif username:
        token = base64.b64encode(f"{username}:{password.reveal() if password else ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    target = url.rstrip("/") + (f"/s/{space}" if space else "") + "/api/saved_objects/_import?overwrite=true"
    request = urllib.request.Request(target, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise KibanaError(f"Kibana answered HTTP {exc.code} to the import: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise KibanaError(f"Kibana at {url} cannot be reached: {getattr(exc, 'reason', exc)}") from None
    except json.JSONDecodeError as exc:
        raise KibanaError(f"Kibana's answer is not JSON: {exc}") from None
    if not answer.get("success", False):
        errors = answer.get("errors") or []
        listed = "; ".join(f"{e.get('type')} {e.get('id')}: {(e.get('error') or {}).get('type')}" for e in errors[:10])
        raise KibanaError(
            f"Kibana imported {answer.get('successCount', 0)} object(s) and refused {len(errors)}: {listed or answer}"
        )
    return answer
