"""The console behind the reverse proxy that docs/operations.md documents: every nginx block of
the docs, run as written by a real nginx (only its certificate paths and ports replaced) in
front of ``rulekit run``; headless Chromium signs in through it over https and sees a webhook,
posted through the same proxy, arrive in the live feed.

Skips, saying why, without nginx (Debian's nginx-light), openssl, chromium or chromedriver.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium, chromium_or_skip, wait_for
from console_helpers import free_port
from scaffold import REPO, write

from rulekit.server.console.web import CSP

pytest.importorskip("rulekit_chatra")

SECRET = "nginx-e2e-secret-0123456789"
TOKEN = "anna-nginx-token-0123456789"
SAMPLE = REPO / "examples" / "chatra" / "chat_started_anonymous.json"
NGINX_BLOCK = re.compile(r"^```nginx\n(.*?)^```", re.MULTILINE | re.DOTALL)


def nginx_blocks() -> list[tuple[str, str]]:
    """Every ```nginx block of the docs, with the file it is in."""
    blocks = []
    for path in sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md"]):
        text = path.read_text(encoding="utf-8")
        blocks += [(path.name, block) for block in NGINX_BLOCK.findall(text)]
    return blocks


def test_the_docs_have_one_nginx_block_to_run() -> None:
    assert [name for name, _ in nginx_blocks()] == ["operations.md"]


def nginx_or_skip() -> str:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if nginx is None:
        pytest.skip("nginx not found: install Debian's nginx-light (apt-get install nginx-light)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: it makes the test's certificate (apt-get install openssl)")
    return nginx


def substitute(block: str, pattern: str, replacement: str) -> str:
    """``block`` with ``pattern`` replaced; fails when the docs no longer have it."""
    changed, count = re.subn(pattern, replacement, block)
    assert count, f"the documented nginx block has no {pattern!r} any more: update this test"
    return changed


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """``rulekit run`` on an ephemeral port of 127.0.0.1; yields that port."""
    write(tmp_path / "rules.d" / "rules.yaml", "[]\n")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = write(
        tmp_path / "rulekit.yaml",
        f"""
        rules: rules.d
        storage: sqlite:///rulekit.sqlite3
        channels:
          online-chat: {{provider: chatra, webhook_secret: {SECRET}, default_group: support}}
        groups: [support]
        agents:
          - {{email: anna@example.com, groups: [support], channels: [online-chat],
              token_sha256: {digest}}}
        """,
    )
    log = (tmp_path / "daemon.log").open("wb")
    command = [sys.executable, "-m", "rulekit.cli.main", "run", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--no-watch"], stdout=log, stderr=subprocess.STDOUT
    )
    port = ""

    def ready() -> bool:
        nonlocal port
        output = (tmp_path / "daemon.log").read_text()
        assert process.poll() is None, output
        listening = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", output)
        if listening is None:
            return False
        port = listening.group(1)
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, "rulekit run", timeout=30)
        yield str(port)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.fixture
def nginx(daemon: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx running the documented server block in front of the daemon; yields its https URL
    and its access log."""
    binary = nginx_or_skip()
    [(_, block)] = nginx_blocks()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    block = substitute(block, r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    block = substitute(block, r"ssl_certificate +/\S+;", f"ssl_certificate {cert};")
    block = substitute(block, r"ssl_certificate_key +/\S+;", f"ssl_certificate_key {key};")
    block = substitute(block, r"127\.0\.0\.1:8080", f"127.0.0.1:{daemon}")
    access_log = prefix / "access.log"
    block = substitute(block, r"access_log /var/log/nginx/\S+ ", f"access_log {access_log} ")
    temp = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"pid {prefix / 'nginx.pid'};\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {access_log};\n{temp}"
        f"{block}\n"
        "}\n"
    )
    error_log = prefix / "error.log"
    process = subprocess.Popen(
        [
            *(binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")),
            *("-e", str(error_log), "-g", "daemon off; master_process off;"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        assert process.poll() is None, error_log.read_text() if error_log.exists() else "nginx"
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            return httpx.get(url, verify=False, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, "nginx", timeout=20)
        yield f"https://127.0.0.1:{port}", access_log
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def _tools(monkeypatch: pytest.MonkeyPatch) -> None:
    nginx_or_skip()
    chromium_or_skip()
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium never looks anything up online


@pytest.mark.usefixtures("_tools")
def test_sign_in_and_the_live_feed_work_through_the_documented_nginx(
    nginx: tuple[str, Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    url, access_log = nginx
    with chromium(tmp_path / "profile", "--ignore-certificate-errors") as driver:
        driver.get(f"{url}/console/")
        wait_for(lambda: driver.find_elements(By.ID, "token"), "the sign-in form")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "sign-in").click()

        def console_open() -> Any:
            if "sign in from the console" in driver.page_source:
                raise AssertionError(f"the sign-in was refused: {driver.page_source[:300]}")
            return driver.find_elements(By.CSS_SELECTOR, "#connection[data-state='open']")

        wait_for(console_open, "the console and its live stream")
        page = httpx.get(f"{url}/console/login", verify=False)  # (a browser hides the headers)
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        assert page.headers["content-security-policy"] == CSP  # the console's own, passed on
        [cookie] = driver.get_cookies()
        assert cookie["secure"] and cookie["httpOnly"]  # nginx said https (X-Forwarded-Proto)

        response = httpx.post(
            f"{url}/webhooks/online-chat/{SECRET}", content=SAMPLE.read_bytes(), verify=False
        )
        assert response.status_code == 200, response.text
        wait_for(
            lambda: "online-chat · created" in driver.find_element(By.ID, "feed").text,
            "the webhook's event in the live feed",
        )
    search = httpx.get(
        f"{url}/console/api/conversations",
        params={"q": "jane.doe@shop.example"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        verify=False,
    )
    assert search.status_code == 200, search.text
    log = access_log.read_text()
    assert "/console/login" in log
    assert "GET /console/api/conversations HTTP/1.1" in log
    assert SECRET not in log  # the webhook's URL is not logged
    assert "jane" not in log  # nor the console's search: the query string is left out


def outside_address() -> str:
    """An address of this machine other than loopback, for a client that is not on loopback
    (the test skips without one)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route's source is chosen
        address = probe.getsockname()[0]
    except OSError:
        address = "127.0.0.1"
    finally:
        probe.close()
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback")
    return str(address)


def test_healthz_through_the_documented_nginx_says_whether_not_why(
    nginx: tuple[str, Path], daemon: str
) -> None:
    """The documented block publishes /healthz: a client elsewhere gets the status through it,
    not the reasons (the store's path, the rules' files), which a request on the machine gets."""
    url, _ = nginx
    transport = httpx.HTTPTransport(local_address=outside_address(), verify=False)
    with httpx.Client(transport=transport, verify=False) as elsewhere:
        away = elsewhere.get(f"{url}/healthz")
    here = httpx.get(f"http://127.0.0.1:{daemon}/healthz")
    assert away.status_code == here.status_code == 200
    assert away.json()["status"] == "ok" and away.json()["store"] == "ok"
    assert "warnings" in here.json() and "errors" in here.json()["last_reload"]
    assert "warnings" not in away.json() and "errors" not in away.json()["last_reload"]
