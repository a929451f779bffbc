"""A local HTTP server that answers as Slack's Web API and incoming webhooks do, including 429 with
Retry-After, 5xx, and ``ok: false`` errors, scripted per test. Records what was posted."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


def blocks_invalid(blocks) -> bool:
    """Slack's Block Kit limits, as its API enforces them (answered with ``invalid_blocks``): at most
    50 blocks; a section's text 3,000 characters; a header's 150; a context element's 3,000; a
    button's URL 3,000."""
    if blocks is None:
        return False
    if not isinstance(blocks, list) or len(blocks) > 50:
        return True
    for block in blocks:
        text = (block.get("text") or {}).get("text", "")
        if block.get("type") == "section" and len(text) > 3000:
            return True
        if block.get("type") == "header" and len(text) > 150:
            return True
        for element in block.get("elements", []):
            if len(element.get("text", "") if isinstance(element.get("text"), str) else "") > 3000:
                return True
            if len(element.get("url", "")) > 3000:
                return True
    return False


class FakeSlack:
    def __init__(self, token: str = "xoxb-test") -> None:
        self.token = token
        self.script: list[tuple[int, dict, dict]] = []  # (status, headers, body) answered before normal service;
        # status 0: hang for body["seconds"] before answering normally (a client timeout)
        self.messages: list[dict] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                body = (
                    json.loads(raw)
                    if self.headers.get("Content-Type", "").startswith("application/json")
                    else {k: v[0] for k, v in parse_qs(raw).items()}
                )
                status, headers, answer = fake.answer(self.path, body, self.headers.get("Authorization", ""))
                if status == 0:  # hang past the client's timeout, then give up on this connection
                    time.sleep(answer["seconds"])
                    return
                data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def posts(self) -> list[dict]:
        """The channel's own messages: the alerts, without the replies in their threads."""
        return [m for m in self.messages if not m.get("thread_ts")]

    @property
    def replies(self) -> list[dict]:
        return [m for m in self.messages if m.get("thread_ts")]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXXX"

    def answer(self, path: str, body: dict, auth: str):
        with self.lock:
            self.requests.append(path)
            if self.script:
                return self.script.pop(0)
            if path.startswith("/services/"):
                if blocks_invalid(body.get("blocks")):
                    return 400, {}, "invalid_blocks"
                self.messages.append(body)
                return 200, {}, "ok"
            if auth != f"Bearer {self.token}":
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            if path.endswith("/chat.postMessage"):
                if isinstance(body.get("blocks"), str):
                    body["blocks"] = json.loads(body["blocks"])
                if isinstance(body.get("metadata"), str):
                    body["metadata"] = json.loads(body["metadata"])
                if blocks_invalid(body.get("blocks")):
                    return 200, {}, {"ok": False, "error": "invalid_blocks"}
                ts = f"{time.time():.6f}"
                self.messages.append({**body, "ts": ts})
                return (
                    200,
                    {},
                    {"ok": True, "channel": body.get("channel"), "ts": ts, "message": {"text": body.get("text")}},
                )
            if path.endswith("/chat.update"):
                if isinstance(body.get("blocks"), str):
                    body["blocks"] = json.loads(body["blocks"])
                if blocks_invalid(body.get("blocks")):
                    return 200, {}, {"ok": False, "error": "invalid_blocks"}
                for m in self.messages:
                    if m.get("ts") == body.get("ts"):
                        m.update(text=body.get("text"), blocks=body.get("blocks"), edited=True)
                        return 200, {}, {"ok": True, "ts": body["ts"]}
                return 200, {}, {"ok": False, "error": "message_not_found"}
            if path.endswith("/conversations.history"):
                return (
                    200,
                    {},
                    {
                        "ok": True,
                        "messages": [  # as Slack: the channel's own messages, not the replies in threads
                            {"ts": m["ts"], "text": m.get("text"), "metadata": m.get("metadata")}
                            for m in reversed(self.messages)
                            if not m.get("thread_ts")
                        ],
                        "has_more": False,
                    },
                )
            return 404, {}, {"ok": False, "error": "unknown_method"}

    def rate_limit(self, times: int, retry_after: int = 1) -> None:
        self.script += [(429, {"Retry-After": str(retry_after)}, {"ok": False, "error": "ratelimited"})] * times

    def hang(self, times: int, seconds: float) -> None:
        self.script += [(0, {}, {"seconds": seconds})] * times

    def not_ok(self, times: int, error: str = "service_unavailable") -> None:
        self.script += [(200, {}, {"ok": False, "error": error})] * times

    def server_error(self, times: int) -> None:
        self.script += [(500, {}, "internal error")] * times

    def close(self) -> None:
        self.server.shutdown()


def interact(
    url: str, payload: dict, signing_secret: str, timestamp: int | None = None, signed_with: str | None = None
) -> tuple[int, str]:
    """POST an interaction to `url` as Slack does: a form with one ``payload`` field, signed with the
    app's signing secret (`signed_with`: another secret, as a forger would; `timestamp`: a replay)."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    from monitor.alerting.feedback import signature

    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature(signed_with or signing_secret, ts, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def block_actions(user: str, *actions: dict) -> dict:
    """A block_actions payload as Slack sends it for a click in a message."""
    return {
        "type": "block_actions",
        "user": {"id": "U0TEST", "username": user},
        "container": {"type": "message", "message_ts": "1.0", "channel_id": "C123"},
        "actions": [{"block_id": "b", "action_ts": "1.0", **a} for a in actions],
    }
