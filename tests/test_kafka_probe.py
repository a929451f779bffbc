"""The readiness probe services.sh uses must fail on a closed port and on a non-Kafka server."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parents[1] / "deploy" / "local" / "kafka_metadata_probe.py"


def run_probe(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBE), "127.0.0.1", str(port)], capture_output=True, text=True, timeout=20
    )


def test_probe_fails_on_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_probe(port)
    assert result.returncode == 1 and "not ready" in result.stderr


def test_probe_fails_when_server_is_not_kafka() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer_garbage() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    result = run_probe(server.getsockname()[1])
    server.close()
    assert result.returncode == 1


@pytest.mark.services
def test_probe_sees_the_real_broker(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    result = run_probe(int(port))
    assert result.returncode == 0 and int(result.stdout) >= 1
