"""``loadbalancer resolve|watch|register mdns``: run inside a network namespace with a real Avahi."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from loadbalancer import cli
from tests.avahi_netns import AvahiNamespace, namespace_or_skip
from tests.helpers import eventually
from tests.test_mdns import ROOT, Agent, browse, named, publish, withdraw


@pytest.fixture(scope="module")
def avahi() -> Iterator[AvahiNamespace]:
    yield from namespace_or_skip()


def command(namespace: AvahiNamespace, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace.ns, sys.executable, "-m", "loadbalancer", *argv],
        env=namespace.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_resolve_prints_what_avahi_announces(avahi: AvahiNamespace) -> None:
    web = publish(avahi, "cli-web", "_cli._tcp", 8181, "tags=blue", "path=/x")
    try:
        result = command(avahi, "resolve", "mdns:///_cli._tcp", "--json")
        assert result.returncode == 0, result.stderr
        (document,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert document["address"] == "127.0.0.1:8181"
        assert document["tags"] == ["blue"] and document["metadata"] == {"path": "/x"}
        plain = command(avahi, "resolve", "mdns:///_cli._tcp?name=nobody")
        assert plain.returncode == 0 and plain.stdout == ""
        assert "no instances at mdns:///_cli._tcp?name=nobody" in plain.stderr
        old = command(avahi, "resolve", "mdns", "_cli._tcp", "--json")  # the first syntax
        assert old.returncode == 0 and json.loads(old.stdout)["address"] == "127.0.0.1:8181"
    finally:
        withdraw(web)


def test_watch_shows_an_instance_come_and_go(avahi: AvahiNamespace) -> None:
    watching = Agent(avahi, [sys.executable, "-m", "loadbalancer", "watch", "mdns:///_clw._tcp"], parse=False)
    try:
        watching.wait_for(lambda line: "= no instances" in line, "the empty first set")
        web = publish(avahi, "clw", "_clw._tcp", 8282)
        watching.wait_for(lambda line: "+ 127.0.0.1:8282" in line, "added")
        withdraw(web)
        watching.wait_for(lambda line: "- 127.0.0.1:8282" in line, "removed")
    finally:
        watching.process.send_signal(signal.SIGTERM)
        watching.stop()
    assert watching.process.returncode == 0


def test_register_announces_until_stopped(avahi: AvahiNamespace) -> None:
    argv = ["register", "mdns:///_clr._tcp?name=clr", "127.0.0.1:8383", "--meta", "v=1", "--tag", "t"]
    registering = Agent(avahi, [sys.executable, "-m", "loadbalancer", *argv], parse=False)
    try:
        registering.wait_for(lambda line: "registered 127.0.0.1:8383" in line and "clr._clr._tcp.local." in line,
                             "registered")  # fmt: skip
        (fields,) = [f for f in browse(avahi, "_clr._tcp") if named("clr")(f)]
        assert fields[7:9] == ["127.0.0.1", "8383"] and '"v=1"' in fields[9] and '"tags=t"' in fields[9]
        registering.process.send_signal(signal.SIGTERM)
        registering.wait_for(lambda line: "deregistered" in line, "deregistered")
    finally:
        registering.stop()
    assert registering.process.returncode == 0
    # a goodbye lets others keep the record one more second (RFC 6762 section 10.1)
    eventually(lambda: not [f for f in browse(avahi, "_clr._tcp") if named("clr")(f)], 30, "Avahi forgets it")


def test_usage_errors_name_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["resolve", "mdns:///http"]) == 2
    assert "invalid service type 'http'" in capsys.readouterr().err
    assert cli.main(["register", "mdns:///_http._tcp", "api.internal:80"]) == 2
    assert "give the instance's IP address" in capsys.readouterr().err
    assert cli.main(["watch", "mdns:///_http._tcp?interfaces=eth0"]) == 2
    assert "'eth0' is not an IP address" in capsys.readouterr().err
