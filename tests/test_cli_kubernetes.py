"""The command line's kubernetes source, against the Kubernetes API test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from loadbalancer.cli import main
from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice


@pytest.fixture(scope="module")
def k8s_api() -> Iterator[K8sApiServer]:
    with K8sApiServer(token="cli-token") as server:
        yield server


@pytest.fixture
def kubeconfig(k8s_api: K8sApiServer, tmp_path: Path) -> Path:
    file = tmp_path / "config"
    file.write_text(yaml.safe_dump({
        "current-context": "t",
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u", "namespace": "cli"}}],
        "clusters": [{"name": "c", "cluster": {"server": k8s_api.url}}],
        "users": [{"name": "u", "user": {"token": "cli-token"}}],
    }))  # fmt: skip
    return file


def test_resolve_prints_the_ready_endpoints(
    k8s_api: K8sApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1", zone="z1"), endpoint("10.0.0.2")]), "cli")
    assert main(["resolve", f"k8s:///web?kubeconfig={kubeconfig}", "--json"]) == 0
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["address"] for d in documents] == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert documents[0]["metadata"]["zone"] == "z1"


def test_watch_prints_changes_until_sigterm(k8s_api: K8sApiServer, kubeconfig: Path) -> None:
    k8s_api.apply(endpoint_slice("api-a", "api", [endpoint("10.0.1.1")]), "cli")
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "loadbalancer", "watch", "k8s:///api"],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert "+ 10.0.1.1:8080" in process.stdout.readline()
        k8s_api.apply(endpoint_slice("api-a", "api", [endpoint("10.0.1.1"), endpoint("10.0.1.2")]), "cli")
        assert "+ 10.0.1.2:8080" in process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_register_explains_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", "k8s:///web", "10.0.0.1:80"]) == 2
    assert "EndpointSlices are written by the cluster's controllers" in capsys.readouterr().err
    assert main(["register", "kubernetes", "web", "10.0.0.1:80"]) == 2  # the first syntax
    assert "EndpointSlices are written by the cluster's controllers" in capsys.readouterr().err


def test_a_missing_kubeconfig_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", f"k8s:///web?kubeconfig={tmp_path / 'none'}"]) == 2
    assert "cannot read the kubeconfig" in capsys.readouterr().err


def test_an_unreachable_server_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "config"
    file.write_text(yaml.safe_dump({
        "current-context": "t",
        "contexts": [{"name": "t", "context": {"cluster": "c"}}],
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
    }))  # fmt: skip
    assert main(["resolve", f"k8s:///web?kubeconfig={file}", "--timeout", "2"]) == 1
    assert "kubernetes http://127.0.0.1:1" in capsys.readouterr().err
