"""A real Avahi mDNS responder inside a network namespace made for it, so that no multicast leaves the test.

``AvahiNamespace().up()`` creates a network namespace whose loopback carries multicast
(with a route for 224.0.0.0/4 sourced from 127.0.0.1), starts a private D-Bus system bus
and ``avahi-daemon`` in it (in a mount namespace of its own, where its services directory
and run directory are the test's), and waits until Avahi runs. ``popen(argv)`` runs a
command inside the namespace (``avahi-publish``, ``avahi-browse``, a Python process using
the library), with ``DBUS_SYSTEM_BUS_ADDRESS`` set. ``down()`` stops everything it started
by PID and deletes the namespace. Needs root and Debian's ``avahi-daemon``,
``avahi-utils``, ``dbus`` and ``iproute2``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

_DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONF = """[server]
host-name={host}
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-addresses=yes
publish-hinfo=no
publish-workstation=no
publish-domain=no
publish-aaaa-on-ipv4=no

[reflector]
enable-reflector=no
"""

# ip netns exec -> unshare -> sh -> exec avahi-daemon: Avahi sees the test's directories as its own
_BIND_AND_EXEC = 'mount --bind "$1" /etc/avahi/services && mount --bind "$2" /run/avahi-daemon && shift 2 && exec "$@"'
TOOLS = ("ip", "unshare", "dbus-daemon", "dbus-send", "avahi-daemon", "avahi-publish", "avahi-browse")


def unavailable() -> str | None:
    """Why an Avahi namespace cannot be made here (``None``: it can)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "an Avahi network namespace needs Linux and root"
    lacking = [tool for tool in TOOLS if shutil.which(tool) is None]
    if lacking:
        return f"{', '.join(lacking)} not installed (apt-get install avahi-daemon avahi-utils dbus iproute2)"
    return None


class AvahiNamespace:
    """One network namespace with a D-Bus system bus and an Avahi daemon (announcing ``host``.local)."""

    host = "lb-avahi"
    ip = "127.0.0.1"

    def __init__(self) -> None:
        self.ns = f"lbmdns-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.dir = Path(tempfile.mkdtemp(prefix="lb-avahi-"))
        self.services = self.dir / "services"
        self.bus = f"unix:path={self.dir / 'dbus' / 'socket'}"
        self._processes: list[subprocess.Popen[bytes]] = []
        self.avahi: subprocess.Popen[bytes] | None = None
        self._made = False

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus}

    def _ip(self, *argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True)

    def up(self) -> Self:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for sub in ("services", "avahi-run", "dbus"):
            (self.dir / sub).mkdir()
        (self.dir / "dbus").chmod(0o700)
        (self.dir / "dbus.conf").write_text(_DBUS_CONF.format(address=self.bus))
        (self.dir / "avahi.conf").write_text(_AVAHI_CONF.format(host=self.host))
        for target in ("/run/avahi-daemon", "/etc/avahi/services"):
            os.makedirs(target, exist_ok=True)

        self._ip("netns", "add", self.ns)
        self._made = True
        self._ip("-n", self.ns, "link", "set", "lo", "up")
        self._ip("-n", self.ns, "link", "set", "lo", "multicast", "on")
        # zeroconf joins the group on the default interface: it needs a multicast route; "src"
        # keeps packets sourced from 127.0.0.1 (from 0.0.0.0 Avahi would ignore them)
        self._ip("-n", self.ns, "route", "add", "224.0.0.0/4", "dev", "lo", "src", self.ip)

        with (self.dir / "dbus.log").open("ab") as log:
            bus = self.popen(
                ["dbus-daemon", f"--config-file={self.dir / 'dbus.conf'}", "--nofork", "--nopidfile"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._until(lambda: (self.dir / "dbus" / "socket").exists(), "the D-Bus socket", bus)
        with (self.dir / "avahi.log").open("ab") as log:
            command = [
                "unshare", "--mount", "--propagation", "private", "sh", "-c", _BIND_AND_EXEC, "sh",
                str(self.services), str(self.dir / "avahi-run"),
                shutil.which("avahi-daemon") or "avahi-daemon", "--no-drop-root", "--no-chroot", "--no-rlimits",
                "--no-proc-title", "-f", str(self.dir / "avahi.conf"),
            ]  # fmt: skip
            self.avahi = self.popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._until(self._avahi_running, "avahi-daemon running", self.avahi, timeout=20)

    def _avahi_running(self) -> bool:
        result = subprocess.run(
            ["dbus-send", "--system", "--print-reply=literal", "--reply-timeout=1000", "--dest=org.freedesktop.Avahi",
             "/", "org.freedesktop.Avahi.Server.GetState"],
            env=self.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.returncode == 0 and result.stdout.split()[-1:] == ["2"]

    def _until(self, ready: Any, what: str, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > end:
                logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in self.dir.glob("*.log"))
                raise RuntimeError(f"{what}: not reached (exit status {process.poll()}):\n{logs}")
            time.sleep(0.05)

    def popen(self, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace (stopped by ``down()`` if still running)."""
        options.setdefault("stdin", subprocess.DEVNULL)
        options.setdefault("env", self.env)
        process = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **options)
        self._processes.append(process)
        return process

    def run(self, argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace to its end; its output as text."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def down(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if self._made:
            # anything else a test left in the namespace was started inside it by the test
            pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True, check=False)
            for pid in pids.stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
            self._made = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def namespace_or_skip() -> Iterator[AvahiNamespace]:
    """For a fixture: a namespace with Avahi up, then down; skipped (failed under CI) where it cannot be made."""
    from tests.daemon import missing

    reason = unavailable()
    if reason:
        missing(reason)
    with AvahiNamespace() as namespace:
        yield namespace
