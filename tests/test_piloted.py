"""loadbalancer.piloted: ContainerPilot's template and configuration; service() against the Consul API test server."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import loadbalancer
from loadbalancer import TLSConfig, piloted
from loadbalancer.errors import Error, NoEndpointsError
from loadbalancer.piloted import Endpoint, Piloted, render
from tests.consul_fixtures import ConsulServer, unset_consul_variables
from tests.etcd_server import make_certs
from tests.helpers import eventually


@pytest.fixture(autouse=True)
def no_consul_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_consul_variables(monkeypatch)  # consul.Client reads them where the configuration is silent


# -- the template --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ .HOST }}:8500", "consul.local:8500"),
        ("{{.HOST}}", "consul.local"),
        ("[{{ .MISSING }}]", "[]"),
        ('{{ .MISSING | default "localhost" }}', "localhost"),
        ('{{ .HOST | default "localhost" }}', "consul.local"),
        ('{{ default "x" .EMPTY }}', "x"),
        ('{{ env "HOST" }}', "consul.local"),
        ('{{ .LIST | split "," | join ";" }}', "a;b;c"),
        ('{{ range .LIST | split "," }}<{{ . }}>{{ end }}', "<a><b><c>"),
        ('{{ .HOST | replace "." "-" }}', "consul-local"),
        ('{{ .HOST | regexReplaceAll "^([a-z]+)\\\\.(.*)$" "$2.$1" }}', "local.consul"),
        ("{{ range loop 3 }}{{ . }}{{ end }}", "012"),
        ("{{ range loop 2 5 }}{{ . }},{{ end }}", "2,3,4,"),
        ("{{ if .HOST }}yes{{ else }}no{{ end }} {{ if .MISSING }}yes{{ else }}no{{ end }}", "yes no"),
        ("a  {{- .HOST -}}  b", "aconsul.localb"),
        ("{{/* a comment */}}x", "x"),
        ("no action at all", "no action at all"),
    ],
)
def test_template_functions(template: str, expected: str) -> None:
    env = {"HOST": "consul.local", "LIST": "a,b,c", "EMPTY": ""}
    assert render(template, env) == expected


@pytest.mark.parametrize(
    ("template", "line", "reason"),
    [
        ("{\n  {{ .X | nope }}\n}", 2, 'function "nope" not defined'),
        ("a\nb\n{{ range loop 2 }}x", 3, "has no {{end}}"),
        ("{{ end }}", 1, "unexpected {{end}}"),
        ("a\n{{ .X", 2, "unclosed action"),
        ('x\n\n\n{{ replace "a" }}', 4, "wrong number of args for replace: want 3 got 1"),
        ('{{ .X | regexReplaceAll "(" "y" }}', 1, "error calling regexReplaceAll"),
        ("{{ loop 1 2 3 4 }}", 1, "want 1 to 3 got 4"),
        ("{{ range loop 2 }}{{ .X }}{{ end }}", 1, "can't evaluate field X"),
        ('{{ "a" "b" }}', 1, "can't give argument to non-function"),
        ("{{ }}", 1, "empty action"),
        ("{{ .X | }}", 1, "missing value for command"),
        ('{{ join "," .X }}', 1, "join needs a list"),
    ],
)
def test_template_errors_name_the_line(template: str, line: int, reason: str) -> None:
    with pytest.raises(piloted.TemplateError) as caught:
        render(template, {}, name="/etc/cp.json5")
    assert caught.value.line == line and reason in str(caught.value)
    assert f"/etc/cp.json5: line {line}: " in str(caught.value)
    assert isinstance(caught.value, piloted.PilotedError) and isinstance(caught.value, Error)


# -- the configuration -----------------------------------------------------------------------

V2 = """{
  "consul": "{{ .CONSUL_HOST | default "localhost" }}:8500",
  "preStart": "/bin/true",
  "backends": [
    {"name": "db", "poll": 3, "onChange": "/bin/reload"},
    {"name": "cache", "poll": 5, "tag": "primary", "onChange": "/bin/reload"}
  ]
}
"""

V3 = """{
  // ContainerPilot 3: JSON5
  consul: "{{ .CONSUL_HOST }}:8500",
  jobs: [{name: "app", exec: "/bin/app"}],
  watches: [
    {name: "db", interval: 2, dc: "dc1"},
    {name: "cache", interval: 1.5, tag: "primary",},
  ],
}
"""


def write(tmp_path: Path, text: str, name: str = "containerpilot.json5") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_v2_configuration(tmp_path: Path) -> None:
    config = piloted.load_config(write(tmp_path, V2), {})
    assert config.version == 2 and config.consul == "http://localhost:8500"
    assert config.watches == (piloted.Watch("db", 3.0), piloted.Watch("cache", 5.0, "primary"))


def test_v3_configuration_and_the_variable_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, V3)
    config = piloted.load_config("", {"CONTAINERPILOT": f"file://{path}", "CONSUL_HOST": "10.0.0.5"})
    assert config.version == 3 and config.consul == "http://10.0.0.5:8500" and config.path == path
    assert config.watches == (piloted.Watch("db", 2.0, None, "dc1"), piloted.Watch("cache", 1.5, "primary"))


def test_v3_consul_as_an_object_with_scheme_token_and_tls(tmp_path: Path) -> None:
    text = '{consul: {address: "c:8501", scheme: "https", token: "t", tls: {verify: false}}, watches: []}'
    config = piloted.parse_config(text, {})
    assert (config.consul, config.token, config.verify) == ("https://c:8501", "t", False)
    assert config.tls == TLSConfig(verify=False)


def test_the_tls_settings_apply_where_the_agent_speaks_https() -> None:
    tls = '{cafile: "/ca.pem", clientcert: "/c.pem", clientkey: "/k.pem"}'
    config = piloted.parse_config(f'{{consul: {{address: "c:8501", scheme: "https", tls: {tls}}}, watches: []}}', {})
    assert config.tls == TLSConfig(ca="/ca.pem", cert="/c.pem", key="/k.pem")
    config = piloted.parse_config(f'{{consul: {{address: "c:8500", tls: {tls}}}, watches: []}}', {})
    assert config.consul == "http://c:8500" and config.tls is None  # as ContainerPilot: the scheme decides
    assert piloted.parse_config('{consul: "https://c:8501", watches: []}', {}).tls is None  # nothing to say


def test_configuration_errors_each_their_own(tmp_path: Path) -> None:
    with pytest.raises(piloted.NoConfigError, match="CONTAINERPILOT"):
        piloted.load_config("", {})
    with pytest.raises(piloted.NoConfigError):
        piloted.load_config("  ", {"CONTAINERPILOT": ""})
    missing = str(tmp_path / "nope.json")
    with pytest.raises(piloted.ConfigNotFoundError, match="nope.json") as caught:
        piloted.load_config(missing, {})
    assert caught.value.path == missing and isinstance(caught.value, FileNotFoundError)
    with pytest.raises(piloted.ConfigSyntaxError) as bad:
        piloted.load_config(
            write(tmp_path, '{\n  consul: "x:8500",\n  watches: [\n    {name: "db" interval: 2},\n]}'), {}
        )
    assert bad.value.line == 4 and "line 4" in str(bad.value)
    with pytest.raises(piloted.TemplateError, match="line 2"):
        piloted.load_config(write(tmp_path, '{\n"consul": "{{ .X | bogus }}"}'), {})
    with pytest.raises(piloted.ConfigError, match="invalid poll of 'db' 0"):
        piloted.parse_config('{"consul": "c:8500", "backends": [{"name": "db", "poll": 0}]}', {})
    with pytest.raises(piloted.ConfigError, match="invalid consul None"):
        piloted.parse_config('{"backends": []}', {})
    with pytest.raises(piloted.ConfigError, match="consul.scheme 'ftp'"):
        piloted.parse_config('{consul: {address: "c", scheme: "ftp"}, watches: []}', {})
    assert piloted._piloted._default is None
    with pytest.raises(piloted.NotConfiguredError, match=r"piloted.config\(path\) before"):
        piloted.service("db")


# -- service() against Consul ----------------------------------------------------------------


@pytest.fixture
def consul_config(consul_server: ConsulServer, tmp_path: Path) -> str:
    consul_server.register("db", "db-1", 5001)
    consul_server.register("db", "db-2", 5002)
    consul_server.register("cache", "cache-1", 6001, Tags=["primary"])
    consul_server.register("cache", "cache-2", 6002, Tags=["replica"])
    text = V3.replace("interval: 2,", "interval: 600,").replace("interval: 1.5", "interval: 0.2")
    return write(tmp_path, text.replace("{{ .CONSUL_HOST }}", f"127.0.0.1:{consul_server.port}").replace(":8500", ""))


@pytest.fixture
def pilot(consul_config: str) -> Iterator[Piloted]:
    with Piloted(consul_config, env={}) as p:
        yield p


@pytest.mark.server
def test_service_rotates_round_robin_in_consuls_order(pilot: Piloted) -> None:
    got = [pilot.service("db") for _ in range(5)]
    assert got == [Endpoint("127.0.0.1", p) for p in (5001, 5002, 5001, 5002, 5001)]
    assert got[0].address == "127.0.0.1" and got[0].port == 5001 and str(got[0]) == "127.0.0.1:5001"
    eventually(lambda: pilot.endpoints("cache") == [Endpoint("127.0.0.1", 6001)], what="the watch's tag")


@pytest.mark.server
def test_polling_follows_changes_at_the_interval(pilot: Piloted, consul_server: ConsulServer) -> None:
    eventually(lambda: len(pilot.endpoints("cache")) == 1, what="first poll")
    consul_server.register("cache", "cache-3", 6003, Tags=["primary"])
    eventually(lambda: len(pilot.endpoints("cache")) == 2, timeout=10, what="the next poll (0.2 s)")
    consul_server.check("fail", "service:cache-1")
    eventually(lambda: pilot.endpoints("cache") == [Endpoint("127.0.0.1", 6003)], timeout=10, what="critical dropped")


@pytest.mark.server
def test_unconfigured_and_unhealthy_services_raise_their_own_errors(
    pilot: Piloted, consul_server: ConsulServer
) -> None:
    with pytest.raises(piloted.ServiceNotConfiguredError, match="'web' is not configured .* 'db', 'cache'"):
        pilot.service("web")
    consul_server.check("fail", "service:db-1")
    consul_server.check("fail", "service:db-2")
    pilot.refresh()
    with pytest.raises(piloted.NoHealthyInstanceError, match="'db' has no healthy instance") as caught:
        pilot.service("db")
    assert isinstance(caught.value, NoEndpointsError)


@pytest.mark.server
def test_refresh_rereads_every_service_and_service_waits_for_it(pilot: Piloted, consul_server: ConsulServer) -> None:
    assert pilot.service("db").port == 5001
    consul_server.deregister("db-1")  # the db poll is 600 s: only a refresh sees it
    assert pilot.endpoints("db") == [Endpoint("127.0.0.1", 5001), Endpoint("127.0.0.1", 5002)]
    consul_server.pause()  # the refresh hangs on Consul until it resumes
    try:
        future = pilot.request_refresh()
        got: list[Endpoint] = []
        caller = threading.Thread(target=lambda: got.append(pilot.service("db")), daemon=True)
        caller.start()
        caller.join(0.5)  # a bound on how long we look for a call that must not return
        assert got == [] and not future.done()  # service() waits for the update under way
    finally:
        consul_server.resume()
    caller.join(10)
    assert got == [Endpoint("127.0.0.1", 5002)]  # the refreshed set (the old one would answer 5002, then 5001)
    assert pilot.service("db") == Endpoint("127.0.0.1", 5002)
    assert future.result(timeout=10) is None


@pytest.mark.server
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_sighup_refreshes_the_module_level_configuration(consul_config: str, consul_server: ConsulServer) -> None:
    os.environ["CONTAINERPILOT"] = consul_config
    before = signal.getsignal(signal.SIGHUP)
    try:
        piloted.config("")  # go-piloted: a blank path reads $CONTAINERPILOT
        assert piloted.service("db") == Endpoint("127.0.0.1", 5001)
        consul_server.deregister("db-1")
        os.kill(os.getpid(), signal.SIGHUP)
        eventually(lambda: piloted._piloted._default is not None and
                   piloted._piloted._default.endpoints("db") == [Endpoint("127.0.0.1", 5002)],
                   timeout=10, what="the SIGHUP refresh")  # fmt: skip
        assert piloted.service("db") == Endpoint("127.0.0.1", 5002)
    finally:
        del os.environ["CONTAINERPILOT"]
        default = piloted._piloted._default
        if default is not None:
            default.close()
        piloted._piloted._default = None
    assert signal.getsignal(signal.SIGHUP) == before  # closing gives the handler back


@pytest.mark.server
def test_consul_down_is_no_healthy_instance_and_recovery_follows(
    consul_config: str, consul_server: ConsulServer
) -> None:
    consul_server.stop()
    with Piloted(consul_config, env={}) as pilot:
        with pytest.raises(piloted.NoHealthyInstanceError, match="Consul cannot be read"):
            pilot.service("db")
        consul_server.start()
        consul_server.register("db", "db-9", 5009)
        assert pilot.service("db") == Endpoint("127.0.0.1", 5009)


@pytest.mark.server
def test_a_datacenter_consul_does_not_reach_is_an_error_not_a_crash(
    consul_server: ConsulServer, tmp_path: Path
) -> None:
    path = write(
        tmp_path, f'{{consul: "127.0.0.1:{consul_server.port}", watches: [{{name: "db", interval: 60, dc: "far"}}]}}'
    )
    consul_server.register("db", "db-1", 5001)
    with Piloted(path, env={}) as pilot, pytest.raises(piloted.NoHealthyInstanceError, match="No path to datacenter"):
        pilot.service("db")


@pytest.mark.server
def test_an_https_agent_with_the_configurations_ca_and_client_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = make_certs(tmp_path)
    with ConsulServer(tls=certs) as server:
        server.register("db", "db-1", 5001)
        tls = f'{{cafile: "{certs["ca"]}", clientcert: "{certs["client_cert"]}", clientkey: "{certs["client_key"]}"}}'
        consul = f'{{address: "127.0.0.1:{server.port}", scheme: "https", tls: {tls}}}'
        path = write(tmp_path, f'{{consul: {consul}, watches: [{{name: "db", interval: 60}}]}}')
        with Piloted(path, env={}) as pilot:
            assert pilot.service("db") == Endpoint("127.0.0.1", 5001)


# -- packaging -------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["json5", "httpx"])
def test_a_missing_dependency_names_the_piloted_extra(missing: str) -> None:
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from loadbalancer.errors import ExtraNotInstalledError\n"
        "try:\n    import loadbalancer.piloted\n"
        "except ExtraNotInstalledError as error:\n    print(error.extra, error.name, error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.startswith(f"piloted {missing} ") and "pip install 'loadbalancer[piloted]'" in out


def test_piloted_uses_consul_through_its_public_names_only() -> None:
    package = Path(loadbalancer.__file__).parent / "piloted"
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module is not None and "consul" in node.module:
                assert not any(part.startswith("_") for part in node.module.split(".")), (module.name, node.module)
