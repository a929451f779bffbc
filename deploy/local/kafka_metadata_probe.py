"""Readiness probe for Kafka: send one Metadata request and check a broker answers in it.

Standard library only, so services.sh can use it before any virtual environment exists. An open
port is not enough: a KRaft broker accepts connections before it has joined its quorum, and only
answers Metadata with itself as a live broker once it can serve clients.

Usage: python3 kafka_metadata_probe.py HOST PORT   (exit 0 and the broker count when ready)
"""

from __future__ import annotations

import socket
import struct
import sys

METADATA_API_KEY = 3
# v4 is the oldest Metadata version Kafka 4.x still serves (KIP-896) and the newest whose
# request and response are not yet in the "flexible" encoding, so it stays simple to write.
METADATA_VERSION = 4
CORRELATION_ID = 0x0BEA


def _request() -> bytes:
    client_id = b"bearwatch-probe"
    header = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, CORRELATION_ID, len(client_id))
    body = struct.pack(">i?", -1, False)  # all topics (null array), no auto-creation
    payload = header + client_id + body
    return struct.pack(">i", len(payload)) + payload


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = b""
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return chunks


def broker_count(host: str, port: int, timeout: float = 3.0) -> int:
    """Return how many brokers the Metadata response lists."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_request())
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        response = _read_exactly(sock, size)
    correlation_id, _throttle_ms, brokers = struct.unpack(">iii", response[:12])
    if correlation_id != CORRELATION_ID:
        raise ValueError(f"unexpected correlation id {correlation_id}")
    return brokers


def main(argv: list[str]) -> int:
    host, port = argv[1], int(argv[2])
    try:
        count = broker_count(host, port)
    except (OSError, ValueError, struct.error) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1
    print(count)
    return 0 if count > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
