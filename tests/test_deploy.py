"""Deployment artefacts: the compose file parses with the real `docker compose config`, the
Kubernetes manifests render with kustomize and hang together, the systemd unit passes
`systemd-analyze verify`, and all of them run commands the CLI has."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _tool(name: str, probe: list[str], required_env: str) -> None:
    """Skip when a tool is missing on a developer machine; fail where CI says it must be there."""
    found = shutil.which(probe[0]) and subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
    if not found:
        if os.environ.get(required_env):
            pytest.fail(f"{name} is required here ({required_env}) but does not run")
        pytest.skip(f"{name} is not installed (tests/run.sh installs it)")


def _cli_accepts(args: list[str]) -> None:
    """The command line a deployment runs parses (with --help appended, nothing starts)."""
    args = [a for a in args if a != "--config" and not a.startswith("/etc/")]
    words = [a for a in args if not a.startswith("-")][:2]
    result = subprocess.run(
        [sys.executable, "-m", "bearwatch", *words, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (args, result.stderr)


def test_docker_compose_config_parses_the_stack() -> None:
    _tool("docker compose", ["docker", "compose", "version"], "BEARWATCH_REQUIRE_COMPOSE")
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BEARWATCH_SLACK_TOKEN": "xoxb-from-env"},
    )
    assert result.returncode == 0, result.stderr
    import json

    services = json.loads(result.stdout)["services"]
    assert {"kafka", "elasticsearch", "kibana", "monitor", "detector", "trainer"} <= set(services)
    assert (
        services["detector"]["environment"]["BEARWATCH_SLACK_TOKEN"] == "xoxb-from-env"
    )  # secrets come from the environment, none in the file


def test_compose_services_are_healthchecked_and_run_real_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\w+)", dockerfile, flags=re.M))
    assert {"serve", "train"} <= targets
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        if svc.get("restart") != "no" and name != "dashboards":
            assert "healthcheck" in svc, f"{name} has no health check"
        if "build" in svc:
            assert svc["build"]["target"] in targets
        if str(svc.get("image", "")).startswith("bearwatch:"):
            _cli_accepts(svc["command"])
    assert (
        "torch" not in dockerfile.split("FROM base AS serve")[1].split("FROM base AS train")[0]
    )  # the serving image stays slim


def _manifests() -> list[dict]:
    if shutil.which("kubectl"):
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60
        )
        assert rendered.returncode == 0, rendered.stderr
        return [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    return [d for f in kustomization["resources"] for d in yaml.safe_load_all((DEPLOY / "k8s" / f).read_text()) if d]


def test_kubernetes_manifests_hang_together() -> None:
    docs = _manifests()
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert {"bearwatch-monitor", "bearwatch-detector", "bearwatch-trainer"} <= set(by_kind["Deployment"])
    assert by_kind["Deployment"]["bearwatch-detector"]["spec"]["replicas"] == 1
    for name, dep in by_kind["Deployment"].items():
        spec = dep["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), name
        pod = spec["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"], (name, volume)
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for ref in container.get("envFrom", []):
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in by_kind["ConfigMap"]
                else:
                    assert ref["secretRef"].get("optional"), (
                        "a Secret the kustomization does not create must be optional"
                    )
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                if probe in container:
                    assert (
                        container[probe]["httpGet"]["port"] in ports
                        and container[probe]["httpGet"]["path"] == "/healthz"
                    )
            if container.get("args"):
                _cli_accepts(container["args"])
    assert by_kind["PersistentVolumeClaim"]["bearwatch-registry"]["spec"]["accessModes"] == ["ReadWriteMany"]
    settings = by_kind["ConfigMap"]["bearwatch-settings"]["data"]
    from monitor.settings import load_settings

    load_settings(env=settings)  # every variable is a setting bearwatch knows, with a valid value


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    _tool("systemd-analyze", ["systemd-analyze", "--version"], "BEARWATCH_REQUIRE_SYSTEMD_ANALYZE")
    unit = (DEPLOY / "systemd" / "bearwatch@.service").read_text()
    executable = Path(sys.executable).with_name("bearwatch")
    assert executable.exists()
    (tmp_path / "bearwatch@.service").write_text(unit.replace("/opt/bearwatch/.venv/bin/bearwatch", str(executable)))
    for instance in ("monitor", "detect", "trainer"):
        link = tmp_path / f"bearwatch@{instance}.service"
        link.symlink_to(tmp_path / "bearwatch@.service")
        result = subprocess.run(["systemd-analyze", "verify", str(link)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr
        _cli_accepts([instance, "run"])
