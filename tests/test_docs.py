"""Every ```python block of the documentation (``docs/**/*.md``) and of ``README.md`` runs as written.

Each block is one test (its id: ``file:line``), run as a script of its own in a fresh
interpreter, in an empty temporary directory, so it must carry its own imports and define
everything it uses. What may stand before a block, as an HTML comment (blank lines between
are allowed):

- ``<!-- needs: etcd -->``: the block needs a real server (or the project's API test server),
  started here on a free loopback port and handed to the block through the environment
  variable that the system's own tools read (``ETCDCTL_ENDPOINTS``, ``CONSUL_HTTP_ADDR``,
  ``KUBECONFIG``), or a variable the block reads with a default (``DNS_SERVER``,
  ``ZOOKEEPER_HOSTS``, ``EUREKA_CLIENT_SERVICEURL_DEFAULTZONE``). See ``SERVERS`` below for
  each name and what it starts. A server that is not installed skips the block, and fails it
  under ``CI=true``, as every server test of the suite does (``tests/daemon.py``).
- ``<!-- skip: reason -->``: the block is not run (the reason is shown).

A ```text block right after a python block is what the block prints: the lines must match,
``...`` in an expected line standing for any text (a port, a timing). Every block must exit 0
and write nothing to stderr: no warning, no log line, no traceback.

``python -m tests.test_docs`` rewrites the generated table of the proxy's flags in
``docs/proxy.md`` from the argparse parser; ``test_the_proxy_flags_table_is_generated_from_the_parser``
fails when it is out of date.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FILES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

_DIRECTIVE = re.compile(r"<!--\s*(needs|skip):\s*(.*?)\s*-->")
# variables of the systems the blocks talk to: the machine's own must not reach a block
_SYSTEM_VARIABLES = re.compile(r"^(ETCDCTL_|CONSUL_|KUBECONFIG$|KUBERNETES_|DNS_SERVER$|ZOOKEEPER_HOSTS$|EUREKA_)")


@dataclass
class Block:
    path: Path
    line: int  # the line of the opening fence, 1-based
    code: str
    needs: list[str] = field(default_factory=list)
    skip: str | None = None
    expected: list[str] | None = None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _fence(line: str) -> str | None:
    """The info string of an opening or closing fence (``""`` for a bare one), or ``None``."""
    match = re.match(r"^ {0,3}```\s*([\w+-]*)", line)
    return match.group(1) if match else None


def blocks(path: Path) -> list[Block]:
    """The python blocks of one Markdown file, each with its directives and expected output."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        info = _fence(lines[i])
        if info is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and _fence(lines[end]) != "":
            end += 1
        if info == "python":
            block = Block(path, i + 1, "\n".join(lines[i + 1 : end]) + "\n")
            back = i - 1
            while back >= 0 and (not lines[back].strip() or _DIRECTIVE.search(lines[back])):
                for kind, value in _DIRECTIVE.findall(lines[back]):
                    if kind == "needs":
                        block.needs += [name.strip() for name in value.split(",") if name.strip()]
                    else:
                        block.skip = value
                back -= 1
            after = end + 1
            while after < len(lines) and not lines[after].strip():
                after += 1
            if after < len(lines) and _fence(lines[after]) == "text":
                close = after + 1
                while close < len(lines) and _fence(lines[close]) != "":
                    close += 1
                block.expected = lines[after + 1 : close]
            found.append(block)
        i = end + 1
    return found


ALL_BLOCKS = [block for path in FILES for block in blocks(path)]


# -- the servers a block may need ------------------------------------------------------------------


@dataclass
class Context:
    """What a server gives a block: environment variables, and a command prefix to run it under."""

    env: dict[str, str] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _etcd() -> Iterator[Context]:
    from tests.etcd_server import EtcdServer, require_etcd

    require_etcd()
    with EtcdServer() as server:
        yield Context({"ETCDCTL_ENDPOINTS": server.url})


DNS_ZONE = "svc.example."


@contextlib.contextmanager
def _dns() -> Iterator[Context]:
    """BIND, authoritative for ``svc.example.``, with ``_api._tcp.svc.example.`` -> a:8001, b:8002."""
    from tests.servers import BindServer, require_named

    require_named()
    with BindServer(DNS_ZONE) as server:
        server.set_address("a", ["127.0.0.1"])
        server.set_address("b", ["127.0.0.1"])
        server.set_srv("_api._tcp", [(10, 5, 8001, "a.svc.example."), (10, 5, 8002, "b.svc.example.")])
        yield Context({"DNS_SERVER": f"127.0.0.1:{server.port}"})


@contextlib.contextmanager
def _zookeeper() -> Iterator[Context]:
    from tests.zk_server import ZooKeeperServer, require_zookeeper

    require_zookeeper()
    with ZooKeeperServer() as server:
        yield Context({"ZOOKEEPER_HOSTS": server.hosts})


@contextlib.contextmanager
def _consul() -> Iterator[Context]:
    from tests.consul_fixtures import ConsulServer

    with ConsulServer("--reap-interval", "0.1", "--deregister-minimum", "0") as server:
        yield Context({"CONSUL_HTTP_ADDR": server.url})


@contextlib.contextmanager
def _kubernetes() -> Iterator[Context]:
    """The Kubernetes API test server holding Service ``web`` of namespace ``shop`` (two slices)."""
    from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice

    with K8sApiServer(token="docs-token") as server, tempfile.TemporaryDirectory() as directory:
        server.apply(
            endpoint_slice("web-a1", "web", [endpoint("10.1.0.5", zone="eu-1a"), endpoint("10.1.0.6", zone="eu-1b")]),
            "shop",
        )
        server.apply(endpoint_slice("web-b2", "web", [endpoint("10.1.0.7", zone="eu-1a", ready=False)]), "shop")
        config = Path(directory) / "config"
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: docs\n"
            "contexts: [{name: docs, context: {cluster: test, user: docs, namespace: shop}}]\n"
            f"clusters: [{{name: test, cluster: {{server: '{server.url}'}}}}]\n"
            "users: [{name: docs, user: {token: docs-token}}]\n"
        )
        yield Context({"KUBECONFIG": str(config)})


@contextlib.contextmanager
def _eureka() -> Iterator[Context]:
    from tests.eureka_daemon import EurekaServer

    with EurekaServer() as server:
        yield Context({"EUREKA_CLIENT_SERVICEURL_DEFAULTZONE": server.url})


@contextlib.contextmanager
def _avahi() -> Iterator[Context]:
    """A network namespace with a real Avahi: the block runs inside it, so no multicast leaves it."""
    from tests.avahi_netns import AvahiNamespace, unavailable
    from tests.daemon import missing

    reason = unavailable()
    if reason:
        missing(reason)
    with AvahiNamespace() as namespace:
        yield Context({"DBUS_SYSTEM_BUS_ADDRESS": namespace.bus}, ["ip", "netns", "exec", namespace.ns])


SERVERS: dict[str, Callable[[], contextlib.AbstractContextManager[Context]]] = {
    "etcd": _etcd,  # a real etcd; ETCDCTL_ENDPOINTS
    "dns": _dns,  # a real BIND (named) for svc.example.; DNS_SERVER=127.0.0.1:PORT
    "zookeeper": _zookeeper,  # a real ZooKeeper; ZOOKEEPER_HOSTS=127.0.0.1:PORT
    "consul": _consul,  # the Consul API test server; CONSUL_HTTP_ADDR
    "kubernetes": _kubernetes,  # the Kubernetes API test server; KUBECONFIG
    "eureka": _eureka,  # the Eureka API test server; EUREKA_CLIENT_SERVICEURL_DEFAULTZONE
    "avahi": _avahi,  # a real Avahi in a network namespace the block runs in
}


def _params() -> list[object]:
    params: list[object] = []
    for block in ALL_BLOCKS:
        marks: list[pytest.MarkDecorator] = []
        if block.needs:
            marks.append(pytest.mark.server)
        if block.skip is not None:
            marks.append(pytest.mark.skip(reason=f"{block.id}: {block.skip}"))
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def _matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.rstrip().split("..."))
    return re.fullmatch(pattern, actual.rstrip()) is not None


def run(block: Block, context: Context, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not _SYSTEM_VARIABLES.match(name)}
    env.update(context.env)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)  # the block sees the installed library, as a user would
    with tempfile.TemporaryDirectory(prefix="lb-docs-") as directory:
        script = Path(directory) / "block.py"
        script.write_text(block.code)
        return subprocess.run(
            [*context.prefix, sys.executable, str(script)],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", _params())
def test_the_block_runs_as_written(block: Block) -> None:
    unknown = [name for name in block.needs if name not in SERVERS]
    assert not unknown, f"{block.id}: unknown server {unknown} (known: {sorted(SERVERS)})"
    with contextlib.ExitStack() as stack:
        context = Context()
        for name in block.needs:
            given = stack.enter_context(SERVERS[name]())
            context.env.update(given.env)
            context.prefix += given.prefix
        result = run(block, context)
    shown = f"{block.id}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    if result.returncode != 0:
        pytest.fail(f"exit status {result.returncode}: {shown}", pytrace=False)
    if result.stderr:
        pytest.fail(f"the block wrote to stderr: {shown}", pytrace=False)
    if block.expected is not None:
        actual = result.stdout.splitlines()
        if len(actual) != len(block.expected) or not all(map(_matches, block.expected, actual)):
            shown = "\n".join(block.expected)
            pytest.fail(f"{block.id} printed\n{result.stdout}\nwhere the docs show\n{shown}", pytrace=False)


def test_every_block_is_found_and_complete() -> None:
    """The collector sees blocks in every page that has them, and no block is empty or mixes tabs."""
    assert len(ALL_BLOCKS) >= 20, len(ALL_BLOCKS)
    for block in ALL_BLOCKS:
        assert block.code.strip(), block.id
        compile(block.code, block.id, "exec")  # a syntax error names the block


# -- links and the proxy's flags ------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_every_block_type_checks_as_a_users_program(tmp_path: Path) -> None:
    """What the docs show a user writing passes ``mypy --strict`` (each block a module of its own)."""
    names = {}
    for number, block in enumerate(ALL_BLOCKS):
        module = tmp_path / f"block_{number}.py"
        module.write_text(block.code)
        names[module.name] = block.id
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *sorted(names)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    report = result.stdout
    for name, where in names.items():
        report = report.replace(name, where)
    assert result.returncode == 0, report


def test_the_readmes_links_to_the_docs_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|examples|benchmarks)/[^)#\s]*)", readme)
    assert links, "the README links to no docs page"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"the README links to files that do not exist: {missing}"


def test_every_public_module_has_a_reference_page() -> None:
    import pkgutil

    import loadbalancer

    modules = ["loadbalancer"] + [
        info.name
        for info in pkgutil.walk_packages(loadbalancer.__path__, "loadbalancer.")
        if not any(part.startswith("_") for part in info.name.split(".")[1:])
    ]
    missing = [name for name in modules if not (DOCS / "reference" / f"{name}.md").exists()]
    assert not missing, f"public modules without a page under docs/reference/: {missing}"


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_hooks" not in p.parts]
    missing = [page for page in pages if f": {page}" not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


FLAGS_BEGIN = "<!-- proxy-flags: generated by `python -m tests.test_docs`; do not edit by hand -->"
FLAGS_END = "<!-- proxy-flags: end -->"


def proxy_flags_table() -> str:
    """The table of every flag of ``loadbalancer proxy``, with its default, from the argparse parser."""
    import argparse

    from loadbalancer.proxy._flags import build_parser

    parser = build_parser()
    rows = ["| flag | argument | default | what |", "|---|---|---|---|"]
    for group in parser._action_groups:
        for action in group._group_actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flags = ", ".join(f"`{option}`" for option in action.option_strings)
            argument = "" if action.nargs == 0 else f"`{action.metavar or action.dest.upper()}`"
            if action.choices and not action.metavar:
                argument = " ".join(f"`{choice}`" for choice in action.choices)
            text = " ".join((action.help or "").split())
            default = re.search(r"\s*\(default: ([^()]*)\)", text)
            if default is not None:
                text = text[: default.start()] + text[default.end() :]
            shown = default.group(1) if default else ("off" if action.nargs == 0 else "none")
            cells = (cell.replace("|", "\\|") for cell in (flags, argument, shown, text))
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _proxy_page() -> tuple[str, str, str]:
    text = (DOCS / "proxy.md").read_text()
    start = text.index(FLAGS_BEGIN) + len(FLAGS_BEGIN)
    end = text.index(FLAGS_END)
    return text[:start], text[start:end], text[end:]


def test_the_proxy_flags_table_is_generated_from_the_parser() -> None:
    _, table, _ = _proxy_page()
    assert table.strip() == proxy_flags_table(), "docs/proxy.md's flags table is stale: run python -m tests.test_docs"


def test_every_proxy_flag_appears_in_the_proxy_page() -> None:
    from loadbalancer.proxy._flags import build_parser

    page = (DOCS / "proxy.md").read_text()
    missing = [
        action.option_strings[-1]
        for action in build_parser()._actions
        if action.option_strings
        and action.dest != "help"
        and not all(f"`{option}`" in page for option in action.option_strings)
    ]
    assert not missing, f"flags of the parser not in docs/proxy.md: {missing}"


if __name__ == "__main__":
    head, _, tail = _proxy_page()
    (DOCS / "proxy.md").write_text(f"{head}\n\n{proxy_flags_table()}\n\n{tail}")
    print("docs/proxy.md: flags table written")
