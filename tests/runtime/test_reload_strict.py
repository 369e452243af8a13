"""``rulekit run --strict`` refuses to start on a service that is not configured; a reload to
such a set is refused the same way (the old set stays): taken, it would dead-letter every call
of that service, and the daemon's next start (a restart, a reboot) would fail."""

from __future__ import annotations

import httpx
from daemons import write_setup


def test_a_reload_to_an_unconfigured_service_is_refused_under_strict(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config, strict=True)
    version = server.daemon.snapshot.version
    keys = f"    public_key: {chatra.public_key}\n    secret_key: {chatra.secret_key}\n"
    text = config.read_text()
    assert keys in text
    config.write_text(text.replace(keys, ""))  # the keys lost in an edit
    assert server.call(server.daemon.reload("test")) is False
    health = httpx.get(f"{server.url}/healthz", timeout=5).json()
    assert health["rules_version"] == version
    assert health["last_reload"]["ok"] is False
    [error] = health["last_reload"]["errors"]
    assert "needs public_key and secret_key" in error and "--strict" in error
    assert health["warnings"] == []
    config.write_text(text.replace("Hello", "Hi"))
    (tmp_path / "rules.d" / "rules.yaml").write_text(
        (tmp_path / "rules.d" / "rules.yaml").read_text().replace("Hello", "Hi")
    )
    assert server.call(server.daemon.reload("test")) is True  # the next good save is taken
    assert server.daemon.snapshot.version != version


def test_without_strict_the_reload_is_taken_and_warned_of(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    keys = f"    public_key: {chatra.public_key}\n    secret_key: {chatra.secret_key}\n"
    config.write_text(config.read_text().replace(keys, ""))
    assert server.call(server.daemon.reload("test")) is True
    health = httpx.get(f"{server.url}/healthz", timeout=5).json()
    assert any("needs public_key and secret_key" in w for w in health["warnings"])


def test_a_reload_to_a_storage_url_no_store_can_open_is_refused(tmp_path, serve):
    """``rulekit check`` says it is an error and ``rulekit run`` does not start with it: taken
    with a note that a restart applies it, the restart failed."""
    config = write_setup(tmp_path)
    server = serve(config)
    version = server.daemon.snapshot.version
    text = config.read_text()
    for storage in ("mysql://rulekit:pw@db/rulekit", "sqlite:///x.sqlite3?busy_timeout=soon"):
        config.write_text(
            text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage!r}")
        )
        assert server.call(server.daemon.reload("test")) is False
        health = httpx.get(f"{server.url}/healthz", timeout=5).json()
        assert health["rules_version"] == version
        [error] = health["last_reload"]["errors"]
        assert "rulekit.yaml: storage: storage URL" in error, error
        assert "pw" not in error
