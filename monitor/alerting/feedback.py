"""Analysts' answers from Slack: the "False alarm" button and the "Wrong sentiment" menu of an alert.

Slack posts each click to the detector's HTTP server (``POST /slack/actions``, the app's
Interactivity Request URL) as a form with one ``payload`` field, signed with the app's signing
secret: ``X-Slack-Signature: v0=HMAC-SHA256(secret, "v0:" + X-Slack-Request-Timestamp + ":" + body)``.
A request whose signature does not match, or whose timestamp is more than five minutes away (a
replay), is refused with 401 and changes nothing.

- "Wrong sentiment" (a menu of the alert's top headlines, each as neutral or bullish) writes a label
  to the labels index, by ``slack:<user>``: the retraining module's cheapest new data.
- "False alarm" records the verdict on the alert's document (``feedback``), where the detector's
  precision can be read from, and changes no label: an alert can be false with every headline
  rightly bearish (old news, a story that does not move the stock).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qs

from monitor.errors import BearwatchError, InvalidLabel, StoreUnavailable, UnknownAlert
from monitor.labels_store import Label
from monitor.settings import Secret

log = logging.getLogger("bearwatch.feedback")

FALSE_ALARM = "bearwatch_false_alarm"
WRONG_SENTIMENT = "bearwatch_wrong_sentiment"
MAX_SKEW_S = 300  # Slack's advice: refuse requests older than five minutes
CORRECTIONS = ("neutral", "bullish")  # what a "negative" headline may really be


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verified(secret: Secret, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """Whether a request comes from Slack: a fresh timestamp and a matching signature."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp, given = lower.get("x-slack-request-timestamp", ""), lower.get("x-slack-signature", "")
    try:
        fresh = abs((now if now is not None else time.time()) - int(timestamp)) <= MAX_SKEW_S
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret.reveal(), timestamp, body), given)


class FeedbackError(BearwatchError):
    """A signed request that is not an answer bearwatch can take (400)."""


class Feedback:
    """Takes Slack's interaction requests; `labels.put` writes labels, `headlines(ids)` gives each
    item's text, `verdict(alert_id, verdict, by, at)` records a verdict on an alert."""

    def __init__(
        self,
        secret: Secret,
        put_labels: Callable[[Iterable[Label]], int],
        headlines: Callable[[list[str]], dict[str, str]],
        verdict: Callable[[str, str, str, datetime], None],
    ) -> None:
        self.secret = secret
        self.put_labels = put_labels
        self.headlines = headlines
        self.verdict = verdict

    def handle(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> tuple[int, str]:
        """(HTTP status, body) for one request from Slack."""
        if not verified(self.secret, headers, body, now):
            log.warning("refused a Slack interaction request: bad or stale signature")
            return 401, "invalid signature"
        try:
            done = self._apply(self._payload(body), now)
        except (FeedbackError, UnknownAlert, InvalidLabel) as exc:
            log.warning("refused a Slack interaction: %s", exc)
            return 400, str(exc)
        except StoreUnavailable as exc:  # Slack shows the analyst an error; nothing half-written
            log.warning("a Slack interaction could not be stored: %s", exc)
            return 503, "the store is unavailable; try again"
        log.info("Slack feedback: %s", "; ".join(done))
        return 200, ""

    @staticmethod
    def _payload(body: bytes) -> dict:
        try:
            (raw,) = parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"]
            payload = json.loads(raw)
        except (UnicodeDecodeError, KeyError, ValueError) as exc:
            raise FeedbackError(f"not a Slack interaction payload ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("type") != "block_actions":
            raise FeedbackError("only block_actions interactions are taken")
        return payload

    def _apply(self, payload: dict, now: float | None) -> list[str]:
        at = datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc)
        user = payload.get("user") or {}
        by = f"slack:{user.get('username') or user.get('id') or 'unknown'}"
        done, labels = [], []
        for action in payload.get("actions") or []:
            kind = action.get("action_id")
            if kind == FALSE_ALARM:
                alert_id = str(action.get("value") or "")
                if not alert_id:
                    raise FeedbackError("a false-alarm answer without its alert")
                self.verdict(alert_id, "false_alarm", by, at)
                done.append(f"{alert_id} marked a false alarm by {by}")
            elif kind == WRONG_SENTIMENT:
                value = str((action.get("selected_option") or {}).get("value") or "")
                item_id, _, sentiment = value.rpartition("|")
                if not item_id or sentiment not in CORRECTIONS:
                    raise FeedbackError(f"a sentiment answer that is not item|neutral or item|bullish: {value!r}")
                labels.append((item_id, sentiment))
            else:
                raise FeedbackError(f"unknown action {kind!r}")
        if labels:
            texts = self.headlines([i for i, _ in labels])
            missing = [i for i, _ in labels if i not in texts]
            if missing:
                raise FeedbackError(f"no scored item {missing[0]!r} to label")
            self.put_labels(Label(i, texts[i], by, at, sentiment=s) for i, s in labels)
            done += [f"{i} labelled {s} by {by}" for i, s in labels]
        return done
