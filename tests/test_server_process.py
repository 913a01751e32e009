"""server.process.ServerProcess: the port it picks is held from the start, so no other process
(another test's collector under pytest-xdist, say) can take it, and answering on it means
answering from this collector."""

from __future__ import annotations

import errno
import socket

import pytest
import requests

from server.serve import PortUnavailable, gunicorn_argv, listening_socket
from server.testing import ServerProcess, config_dict, make_bundle


def _bind(port: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_listening_socket_holds_its_port_and_gunicorn_is_told_the_descriptor():
    s = listening_socket("127.0.0.1")
    try:
        port = s.getsockname()[1]
        assert port > 0 and not s.get_inheritable()  # a child gets it only by pass_fds, or at an exec
        with pytest.raises(OSError) as e:
            _bind(port)
        assert e.value.errno == errno.EADDRINUSE
        with pytest.raises(PortUnavailable, match=f"cannot listen on 127.0.0.1:{port}") as taken:
            listening_socket("127.0.0.1", port)  # a clear error (the CLI's), not a traceback
        assert taken.value.in_use
        argv = gunicorn_argv("server.json", s.fileno(), 1, 1)
        assert argv[argv.index("--bind") + 1] == f"fd://{s.fileno()}" and argv.count("--bind") == 1
    finally:
        s.close()
    with pytest.raises(PortUnavailable) as e:  # not an address of this machine
        listening_socket("no-such-host.invalid")
    assert not e.value.in_use


def test_an_ipv6_host_is_taken_bare_or_as_in_a_url():
    for host in ("::1", "[::1]"):
        try:
            s = listening_socket(host)
        except PortUnavailable as e:
            pytest.skip(f"no IPv6 loopback here: {e}")
        with s:
            assert s.family == socket.AF_INET6 and s.getsockname()[0] == "::1"


def test_the_port_is_held_from_construction_served_and_refused_once_stopped(tmp_path):
    make_bundle(str(tmp_path / "bundle"))
    srv = ServerProcess(str(tmp_path / "srv"), config_dict(str(tmp_path / "bundle"), str(tmp_path / "state")),
                        threads=1)
    with pytest.raises(OSError):  # before start: nobody else can bind it
        _bind(srv.port)
    srv.start()
    try:
        assert requests.get(srv.url + "/v1/status", timeout=10).status_code == 200
        with pytest.raises(OSError):
            _bind(srv.port)
    finally:
        srv.stop()
    with pytest.raises(requests.ConnectionError):  # refused at once: no listening socket left behind
        requests.get(srv.url + "/v1/status", timeout=5)
    srv.start()  # the same port, bound again
    try:
        assert requests.get(srv.url + "/v1/status", timeout=10).status_code == 200
    finally:
        srv.kill()


def test_a_server_never_started_lets_go_of_its_port(tmp_path):
    srv = ServerProcess(str(tmp_path / "srv"), config_dict(str(tmp_path / "b"), str(tmp_path / "s")))
    with pytest.raises(OSError):
        _bind(srv.port)
    srv.stop()
    _bind(srv.port)  # free again
