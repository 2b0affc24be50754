"""The deployment recipes match the code (no Docker daemon or cluster here): probe paths, ports and env
names in the Kubernetes manifests and the compose file, grace periods longer than the drain, and the
image's command, run directly (on a loopback address), answering those probe paths."""

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness import ROOT, Process, free_port

DEPLOY = ROOT / "deploy"


def manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def kind(name: str) -> dict[str, Any]:
    found = [doc for doc in manifests() if doc["kind"] == name]
    assert len(found) == 1, f"expected one {name} in deploy/kubernetes"
    return found[0]


def setting_names() -> set[str]:
    """Every SWITCHBOARD_ variable the code reads (bus/settings.py names them as string literals)."""
    source = (ROOT / "bus" / "settings.py").read_text()
    return {"SWITCHBOARD_" + name for name in re.findall(r'"([A-Z][A-Z_]+[A-Z])"', source)}


def dockerfile_command() -> list[str]:
    cmd = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return list(json.loads(cmd[-1][4:]))


def test_kubernetes_probes_ports_and_env_match_the_code() -> None:
    deployment = kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = container["ports"][0]
    assert port["containerPort"] == int(dockerfile_command()[-1]) == 8000
    assert container["args"] == dockerfile_command()
    assert container["readinessProbe"]["httpGet"]["path"] == "/chat/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/chat/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/chat/healthz"
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
        assert container[probe]["timeoutSeconds"] > 2  # longer than SWITCHBOARD_READY_TIMEOUT_SECONDS
    env = {e["name"]: e for e in container["env"]}
    unknown = set(env) - setting_names()
    assert not unknown, f"the Deployment sets variables the code does not read: {unknown}"
    drain = float(env["SWITCHBOARD_DRAIN_SECONDS"]["value"])
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + 5
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/chat/metrics"
    service = kind("Service")
    assert (
        service["spec"]["ports"][0]["targetPort"] == port["name"] and "sessionAffinity" not in service["spec"]
    )
    assert kind("PodDisruptionBudget")["spec"]["selector"] == deployment["spec"]["selector"]
    ingress = kind("Ingress")["metadata"]["annotations"]
    assert int(ingress["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 75
    assert not any("affinity" in key for key in ingress)


def test_compose_file_matches_the_code() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    replicas = [s for name, s in services.items() if name.startswith("replica")]
    assert len(replicas) == 3 and {"redis", "haproxy"} <= set(services)
    for replica in replicas:
        assert set(replica["environment"]) <= setting_names()
        assert "/chat/readyz" in " ".join(replica["healthcheck"]["test"])
        drain = float(replica["environment"]["SWITCHBOARD_DRAIN_SECONDS"])
        assert float(replica["stop_grace_period"].rstrip("s")) > drain
    haproxy = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    assert "option httpchk GET /chat/readyz" in haproxy and "cookie" not in haproxy
    assert all(f"replica{i}:8000" in haproxy for i in (1, 2, 3))
    assert services["haproxy"]["ports"] == ["127.0.0.1:8080:8080"]


def test_the_image_command_serves_the_probe_paths(redis_url: str, prefix: str) -> None:
    """The Dockerfile's CMD, run directly (its 0.0.0.0 replaced by 127.0.0.1, its port by a free one)."""
    command = dockerfile_command()
    port = free_port()
    command = [c.replace("0.0.0.0", "127.0.0.1") for c in command[:-1]] + [str(port)]
    assert command[0] == "uvicorn"
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": prefix,
        "SWITCHBOARD_LOG_FORMAT": "json",
    }
    process = Process([sys.executable, "-m", *command], env=env, name="image-command")
    try:
        process.wait_for_line("Application startup complete")
        container = kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
            answer = httpx.get(f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}", timeout=10)
            assert answer.status_code == 200, (probe, answer.text)
        metrics = httpx.get(f"http://127.0.0.1:{port}/chat/metrics", timeout=10)
        assert "switchboard_ready 1.0" in metrics.text
        page = httpx.get(f"http://127.0.0.1:{port}/chat/_switchboard/socket.io.min.js", timeout=10)
        assert page.status_code == 200
    finally:
        process.stop()
    assert all(line.startswith("{") for line in process.lines), "SWITCHBOARD_LOG_FORMAT=json: JSON lines"


def test_deploy_readme_says_what_was_run_and_what_was_not() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert "What was run here" in text and "What was not run" in text
    assert Path(DEPLOY / "local" / "haproxy.cfg").exists()


def test_the_image_build_stage_packages_the_chat_page_client(tmp_path: Path) -> None:
    """The Dockerfile's build stage, without Docker: its COPY sources (node_modules from the client
    stage, which ran `npm ci`) in a context of their own, then its `pip install .` as a wheel build.
    The installed package is all the runtime stage has: it must carry the Socket.IO client."""
    stages = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")
    build = next(stage for stage in stages if " AS build" in stage.splitlines()[0])
    context = tmp_path / "src"
    context.mkdir()
    for line in build.splitlines():
        if not line.startswith("COPY "):
            continue
        *sources, target = line.split()[1:]
        if sources[0] == "--from=client":
            sources = sources[1:]  # the client stage's /src/node_modules: this checkout's npm ci
            sources = [Path(s).relative_to("/src").as_posix() for s in sources]
        for source in sources:
            destination = context if target == "./" else context / target
            if (ROOT / source).is_dir():
                # As a clean clone has it (.dockerignore leaves out the same): no vendored client.
                ignored = shutil.ignore_patterns("__pycache__", "vendor")
                shutil.copytree(ROOT / source, destination, ignore=ignored)
            else:
                shutil.copy(ROOT / source, destination)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("switchboard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"web/static/vendor/socket.io.min.js", "web/static/vendor/socket.io.min.js.map"} <= names
