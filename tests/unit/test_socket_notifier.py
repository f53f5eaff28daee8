"""vesper.store.SocketNotifier: wake-ups between processes through Unix datagram
sockets (the SQLite store's notifier), and its fallback to polling."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from tests.integration.harness import wait_until
from vesper.store import SocketNotifier


def test_publish_wakes_a_subscriber_and_removes_the_socket_of_a_gone_one(tmp_path: Path) -> None:
    notifier = SocketNotifier(tmp_path / "wake")
    woken: list[int] = []
    live = notifier.subscribe(lambda: woken.append(1))
    gone = tmp_path / "wake" / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(gone))  # a subscriber that died without closing: its file stays
    try:
        assert live.connected()
        wait_until(lambda: woken, timeout=5, what="the catch-up call")
        notifier.publish()
        wait_until(lambda: len(woken) >= 2, timeout=5, what="the published wake-up")
        assert not gone.exists()
    finally:
        live.close()
    assert not live.connected()
    assert list((tmp_path / "wake").iterdir()) == []


def test_without_a_socket_the_subscription_says_so_and_workers_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 120)  # longer than a Unix socket address holds
    notifier = SocketNotifier(deep)
    with caplog.at_level(logging.WARNING, logger="vesper.listen"):
        subscription = notifier.subscribe(lambda: None)
    assert not subscription.connected()
    assert "cannot bind a wake-up socket" in caplog.text
    notifier.publish()  # nothing to wake, nothing raised
    subscription.close()


def test_publish_to_a_directory_that_does_not_exist_does_nothing(tmp_path: Path) -> None:
    SocketNotifier(tmp_path / "absent").publish()
    assert not (tmp_path / "absent").exists()
