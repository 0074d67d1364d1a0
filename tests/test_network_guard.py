"""A check of the guard itself: the autouse fixture must turn any connection into an error."""

import socket
import urllib.request

import pytest
from conftest import NetworkBlockedError


@pytest.mark.network_guard
def test_socket_connect_is_blocked():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlockedError):
            s.connect(("127.0.0.1", 9))
    finally:
        s.close()


@pytest.mark.network_guard
def test_urllib_download_is_blocked():
    with pytest.raises((NetworkBlockedError, OSError)) as info:
        urllib.request.urlopen("http://example.com", timeout=1)
    # urllib wraps the error; the guard's message must be inside it.
    assert "must not touch the network" in str(info.value)
