"""Settings into components' configs: the one place that reads the settings tree for a component.

Each function takes the whole :class:`Settings` and returns what one component is built with, so a
setting is translated once, whichever daemon (scoring, detection, trainer) or the embedded default
builds that component. The composition roots (``bearwatch/daemon.py``, ``training/cli.py``) call
these; components never see :class:`Settings`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from monitor.detection.tracker import TrackerConfig
from monitor.observability import Health, serve
from monitor.pipeline import PipelineSettings
from monitor.settings import Settings

if TYPE_CHECKING:
    from monitor.alerting.slack import SlackDelivery

log = logging.getLogger("bearwatch.wiring")


def pipeline_settings(settings: Settings) -> PipelineSettings:
    r, m, k = settings.retrieval, settings.monitor, settings.kafka
    return PipelineSettings(
        scored_topic=k.scored_topic,
        dlq_topic=k.dlq_topic,
        dedup_window=timedelta(hours=m.dedup_window_hours),
        related_k=r.k,
        related_method=r.history,
        lookback=timedelta(hours=r.lookback_hours),
    )


def tracker_config(settings: Settings) -> TrackerConfig:
    d = settings.detection
    base = TrackerConfig()
    return TrackerConfig(
        bucket=timedelta(minutes=d.bucket_minutes),
        lateness=timedelta(minutes=d.lateness_minutes),
        dedup_window=timedelta(hours=settings.monitor.dedup_window_hours),
        share_alpha=d.alpha,
        counts=replace(base.counts, alpha=d.alpha),
        early=timedelta(minutes=d.early_check_minutes) if d.early_check_minutes > 0 else None,
        min_confidence=d.min_confidence,
        paged_memory=timedelta(hours=d.paged_memory_hours) if d.paged_memory_hours > 0 else None,
    )


def slack_delivery(settings: Settings) -> SlackDelivery | None:
    """The Slack delivery the settings ask for, or None when no Slack is configured."""
    from monitor.alerting.slack import SlackDelivery, SlackSettings

    s = settings.slack
    if not ((s.token and s.channel) or s.webhook_url):
        return None
    return SlackDelivery(
        SlackSettings(
            token=s.token,
            channel=s.channel,
            webhook_url=s.webhook_url,
            base_url=s.base_url,
            timeout_s=s.timeout_seconds,
        )
    )


def serve_health(
    settings: Settings, what: str, registry=None, health: Health | None = None, posts=None
) -> Health | None:
    """/metrics and /healthz on settings.metrics for a daemon (a fresh Health and an empty registry
    unless given), and `posts` (the detector's Slack answers); None when the port is 0."""
    if not settings.metrics.port:
        if posts:
            log.warning("%s: metrics.port is 0, so %s cannot be answered", what, ", ".join(posts))
        return None
    from prometheus_client import CollectorRegistry

    health = health or Health()
    server = serve(settings.metrics.host, settings.metrics.port, registry or CollectorRegistry(), health, posts)
    log.info(
        "%s: metrics and health on http://%s:%d/metrics, /healthz",
        what,
        settings.metrics.host,
        server.server_address[1],
    )
    return health
