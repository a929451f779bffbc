"""Elasticsearch: the client from settings, the indices, and the one translation of its errors.

Every adapter in this package calls Elasticsearch through :func:`call` (or :func:`translated`), so
a connection failure, a timeout or an error answer becomes :class:`StoreUnavailable` with what was
being done, the same way everywhere: the caller retries the batch, nothing is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from monitor.errors import StoreUnavailable
from monitor.indices import NEWS, mappings
from monitor.settings import ElasticsearchSettings

log = logging.getLogger("bearwatch.elasticsearch")


def connect(settings: ElasticsearchSettings):
    """An Elasticsearch client from settings (credentials from Secret values, never logged)."""
    from elasticsearch import Elasticsearch

    options: dict = {"request_timeout": settings.request_timeout, "retry_on_timeout": False, "max_retries": 0}
    if settings.api_key:
        options["api_key"] = settings.api_key.reveal()
    elif settings.username:
        options["basic_auth"] = (settings.username, settings.password.reveal() if settings.password else "")
    if settings.ca_certs:
        options["ca_certs"] = settings.ca_certs
    if not settings.verify_certs:
        options["verify_certs"] = False
    return Elasticsearch(settings.url, **options)


def translate(action: str, exc: Exception) -> StoreUnavailable:
    """The StoreUnavailable for a failed request. The client's own message can carry the URL;
    never credentials (those travel in headers)."""
    return StoreUnavailable(f"Elasticsearch {action} failed: {type(exc).__name__}: {str(exc)[:300]}")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Requests inside raise StoreUnavailable instead of the client's errors."""
    from elasticsearch import ApiError, TransportError

    try:
        yield
    except (ApiError, TransportError) as exc:
        raise translate(action, exc) from exc


def call(action: str, fn, **kwargs):
    """`fn(**kwargs)`, a request, with its errors translated."""
    with translated(action):
        return fn(**kwargs)


def ensure_indices(client, settings: ElasticsearchSettings, embedding_dims: int) -> None:
    """Create bearwatch's indices if missing (0 replicas is left to the cluster's templates); an
    existing index gets the fields a newer bearwatch added (a conflicting change is an error)."""
    from elasticsearch import ApiError, TransportError

    for name, mapping in mappings(embedding_dims).items():
        index = settings.index(name)
        # The news index takes the bulk of the writes: it refreshes every elasticsearch.refresh_seconds.
        options = {"refresh_interval": f"{round(settings.refresh_seconds * 1000)}ms"} if name == NEWS else {}
        try:
            if not client.indices.exists(index=index):
                client.indices.create(index=index, mappings=mapping, settings={"index": options} if options else None)
                log.info("created index %s", index)
            else:
                client.indices.put_mapping(index=index, properties=mapping["properties"])
                if options:
                    client.indices.put_settings(index=index, settings={"index": options})
        except ApiError as exc:
            if getattr(exc, "error", "") == "resource_already_exists_exception":
                continue  # another instance created it between exists and create
            raise translate(f"creating index {index}", exc) from exc
        except TransportError as exc:
            raise translate(f"creating index {index}", exc) from exc
