"""Slack delivery with slack-sdk: bot token + channel (chat.postMessage) or an incoming webhook.

Each call is one attempt: a rate limit (429 + Retry-After), a server error, a timeout or a transient
``ok: false`` raises :class:`DeliveryFailed` (with Slack's Retry-After when it gave one), and the
outbox tries again at a later pass, after its back-off (monitor/alerting/outbox.py); nothing here
sleeps in the detection loop. So it does for a refusal of the token or the channel (the operator's
to fix). When Slack refuses the message itself (``invalid_blocks``, ``msg_too_long``...), no attempt
can ever work: it raises with ``permanent``, and the outbox parks the alert as failed, with the
reason. With a bot token every message carries the alert id in its metadata, so before re-sending
an alert whose earlier attempt may have reached Slack, the channel is checked for it: a crash
between posting and recording never posts twice. :meth:`SlackDelivery.post_retrying` (the trainer's
notices, off any detection loop) retries in place.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from monitor.errors import DeliveryFailed
from monitor.settings import Secret

log = logging.getLogger("bearwatch.slack")
TRANSIENT_ERRORS = {"ratelimited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}
# What Slack says when the message itself is wrong: posting it again can never work, so the alert
# is parked as failed. Other refusals (token, channel) are the operator's to fix: the alert waits.
MESSAGE_ERRORS = {
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_too_long",
    "no_text",
    "invalid_attachments",
    "too_many_attachments",
    "invalid_metadata_format",
    "invalid_metadata_schema",
    "metadata_too_large",
}
METADATA_EVENT = "bearwatch_alert"
METADATA_REPLY = "bearwatch_alert_followup"  # a thread reply: never taken for the alert's own message


@dataclass(frozen=True)
class SlackSettings:
    token: Secret | None = None
    channel: str | None = None
    webhook_url: Secret | None = None
    base_url: str = "https://slack.com/api/"
    attempts: int = 5
    max_wait_s: float = 60.0
    timeout_s: float = 10.0


class SlackDelivery:
    def __init__(self, settings: SlackSettings, sleep=time.sleep) -> None:
        if not (settings.token and settings.channel) and not settings.webhook_url:
            raise ValueError("Slack needs a bot token and a channel, or an incoming webhook URL")
        self.settings = settings
        self.sleep = sleep
        self.channel: str = settings.channel or ""  # token mode has one (checked above); a webhook names its own
        self.client: Any = None  # slack_sdk.WebClient in token mode
        self.webhook: Any = None  # slack_sdk.webhook.WebhookClient in webhook mode
        if settings.token:
            from slack_sdk import WebClient

            self.client = WebClient(
                token=settings.token.reveal(), base_url=settings.base_url, timeout=int(settings.timeout_s)
            )
            self.webhook = None
        else:
            from slack_sdk.webhook import WebhookClient

            assert settings.webhook_url is not None  # checked above
            self.webhook = WebhookClient(settings.webhook_url.reveal(), timeout=int(settings.timeout_s))

    def already_posted(self, alert_id: str, since_epoch: float) -> str | None:
        """The ts of a message already carrying this alert id, if the channel has one (token mode)."""
        if self.client is None:
            return None
        from slack_sdk.errors import SlackApiError

        try:
            response = self.client.conversations_history(
                channel=self.channel, oldest=str(since_epoch), include_all_metadata=True, limit=200
            )
        except SlackApiError as exc:
            raise DeliveryFailed(
                f"Slack conversations.history failed: {exc.response.get('error') if exc.response else exc}"
            ) from None
        except OSError as exc:  # connection refused, timeouts: the check is retried with the delivery
            raise DeliveryFailed(f"Slack conversations.history failed: {type(exc).__name__}: {exc}") from None
        for message in response.get("messages", []):
            meta = message.get("metadata") or {}
            if (
                meta.get("event_type") == METADATA_EVENT
                and (meta.get("event_payload") or {}).get("alert_id") == alert_id
            ):
                return message.get("ts")
        return None

    @property
    def can_update(self) -> bool:
        return self.client is not None  # incoming webhooks cannot edit what they posted

    def update(self, ts: str, text: str, blocks: list[dict]) -> None:
        """Edit a posted message (token mode): how an episode's end reaches the channel."""
        from slack_sdk.errors import SlackApiError

        try:
            self.client.chat_update(channel=self.channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response else exc
            raise DeliveryFailed(f"Slack chat.update failed: {error}", permanent=error in MESSAGE_ERRORS) from None
        except OSError as exc:
            raise DeliveryFailed(f"Slack chat.update failed: {type(exc).__name__}: {exc}") from None

    def post(self, alert_id: str, text: str, blocks: list[dict], thread_ts: str | None = None) -> str:
        """One attempt; returns the message ts (token mode) or "webhook". `thread_ts`: a reply in
        that message's thread (token mode)."""
        outcome, wait, detail = self._try(alert_id, text, blocks, thread_ts)
        if outcome == "ok":
            return detail
        if outcome == "message":
            raise DeliveryFailed(f"Slack refused alert {alert_id}: {detail}", permanent=True)
        raise DeliveryFailed(
            f"Slack did not accept alert {alert_id}: {detail}", retry_after=wait, refused=outcome == "refused"
        )

    def post_retrying(self, alert_id: str, text: str, blocks: list[dict]) -> str:
        """Post with up to `attempts` tries in place, honouring Retry-After: for callers with no
        outbox to retry later (the trainer's notices). A refused token or channel is not retried."""
        delay, detail = 1.0, ""
        for attempt in range(1, self.settings.attempts + 1):
            outcome, wait, detail = self._try(alert_id, text, blocks)
            if outcome == "ok":
                return detail
            if outcome == "message":
                raise DeliveryFailed(f"Slack refused {alert_id}: {detail}", permanent=True)
            if outcome == "refused":
                break
            if attempt < self.settings.attempts:
                wait = min(self.settings.max_wait_s, wait if wait is not None else delay * (0.5 + random.random()))
                log.warning("Slack did not accept %s (%s), attempt %d/%d; retrying in %.1fs", alert_id, detail,
                            attempt, self.settings.attempts, wait)  # fmt: skip
                self.sleep(wait)
                delay = min(self.settings.max_wait_s, delay * 2)
        raise DeliveryFailed(f"Slack did not accept {alert_id}: {detail}")

    def _try(
        self, alert_id: str, text: str, blocks: list[dict], thread_ts: str | None = None
    ) -> tuple[str, float | None, str]:
        """('ok', None, ts) | ('retry', retry_after or None, why) | ('message' | 'refused', None, why)."""
        from slack_sdk.errors import SlackApiError

        try:
            if self.client is not None:
                response = self.client.chat_postMessage(
                    channel=self.channel,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                    metadata={
                        "event_type": METADATA_REPLY if thread_ts else METADATA_EVENT,
                        "event_payload": {"alert_id": alert_id},
                    },
                )
                return "ok", None, response["ts"]
            response = self.webhook.send(text=text, blocks=blocks, unfurl_links=False, unfurl_media=False)
            if response.status_code == 200:
                return "ok", None, "webhook"
            return self._classify(response.status_code, response.headers or {}, response.body)
        except SlackApiError as exc:
            r = exc.response  # a SlackResponse: Slack's JSON answer, its status and headers
            return self._classify(r.status_code, r.headers or {}, r.get("error") or str(exc))
        except OSError as exc:  # connection refused, timeouts
            return "retry", None, f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _classify(status: int, headers: dict, error) -> tuple[str, float | None, str]:
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        detail = f"HTTP {status}: {error}"
        if status == 429 or error == "ratelimited":
            value = retry_after[0] if isinstance(retry_after, list) else retry_after
            try:
                return "retry", float(value) if value is not None else None, detail
            except (TypeError, ValueError):
                return "retry", None, detail
        if status >= 500 or error in TRANSIENT_ERRORS:
            return "retry", None, detail
        return ("message" if str(error).strip() in MESSAGE_ERRORS else "refused"), None, detail
