"""The proxy's status page, looked at in a real headless browser (Debian's ``chromium``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.daemon import missing
from tests.helpers import eventually
from tests.http_fixtures import HttpBackend, running
from tests.proxy_fixtures import ProxyProcess

pytestmark = pytest.mark.server


@pytest.fixture
def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium is not installed (apt-get install chromium): the status page needs a real browser")
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ProxyProcess, list[HttpBackend]]]:
    with running(2) as backends:
        urls = [arg for backend in backends for arg in ("-b", f"http://{backend.address}")]
        with ProxyProcess(urls, tmp_path) as proxy:
            yield proxy, backends


def render(browser: str, url: str) -> str:
    """The page's DOM after its script ran (the first reading and one refresh)."""
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_the_status_page_shows_backends_health_and_requests(
    browser: str, served: tuple[ProxyProcess, list[HttpBackend]]
) -> None:
    proxy, backends = served
    for _ in range(20):
        assert requests.get(f"{proxy.url}/echo", timeout=10).status_code == 200
    status = f"http://127.0.0.1:{proxy.metrics_port}"
    eventually(lambda: requests.get(f"{status}/status.json", timeout=10).json()["totals"].get("healthy_backends") == 2)

    def counted() -> int:  # the workers write their counts at each sweep, a second apart at most
        return sum(row["requests"] for row in requests.get(f"{status}/status.json", timeout=10).json()["backends"])

    eventually(lambda: counted() == 20, 10, "the 20 requests counted")
    dom = render(browser, f"{status}/status")
    assert "2 of 2 backends healthy; 20 requests" in dom
    rows = re.findall(r'<tr class="backend">(.*?)</tr>', dom)
    assert len(rows) == 2, dom
    for backend in backends:
        assert any(backend.address in row for row in rows), dom
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert [row[1] for row in cells] == ["healthy", "healthy"]
    assert sum(int(float(row[2])) for row in cells) == 20  # the requests column
    assert all(row[5].endswith(" ms") for row in cells)  # a median latency for each

    down, up = backends
    down.kill()  # its health check fails: the row says so, and why
    eventually(
        lambda: any(
            row["backend"] == down.address and row["healthy"] is False
            for row in requests.get(f"{status}/status.json", timeout=10).json()["backends"]
        ),
        20,
        "the dead backend's row",
    )
    rows_now = {row["backend"]: row for row in requests.get(f"{status}/status.json", timeout=10).json()["backends"]}
    assert rows_now[down.address]["error"] and rows_now[up.address]["healthy"] is True
    dom = render(browser, f"{status}/status")
    shown = {
        cells[0]: (cells[1], bad)
        for bad, row in re.findall(r'<tr class="backend( bad)?">(.*?)</tr>', dom)
        for cells in [re.findall(r"<td>(.*?)</td>", row)]
    }
    assert shown[down.address][0].startswith("down: ") and shown[down.address][1] == " bad", dom
    assert shown[up.address] == ("healthy", ""), dom
