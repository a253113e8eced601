"""Run a client with no network but the gateway (and PostgreSQL): a new network namespace (`unshare -n`)
whose loopback reaches the ports we name through Unix sockets, which cross namespaces.

Outside (the test process):

    with Bridge([14300, 5432]) as bridge:
        subprocess.run(bridge.wrap(["claude", "-p", "hi"]), ...)

`wrap` prefixes `unshare -n -- python tests/e2e/netns.py --forward PORT=SOCKET ... --`: inside, this file
brings `lo` up, listens on 127.0.0.1:PORT for each forwarded port, pipes every connection to the Unix
socket, where the Bridge pipes it on to 127.0.0.1:PORT outside, then runs the command and exits with its
status. Anything else the client tries (a vendor's cloud, telemetry) fails at once: there is no route.
Where `unshare -n` is not allowed, `wrap` returns the command unchanged and `isolated` is False; callers
then block other traffic through a dead proxy (`fallback_env`).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _join(a: socket.socket, b: socket.socket) -> None:
    back = threading.Thread(target=_pipe, args=(b, a), daemon=True)
    back.start()
    _pipe(a, b)
    back.join(600)
    a.close()
    b.close()


def _handler(connect: Callable[[], socket.socket]) -> type[socketserver.BaseRequestHandler]:
    class Forward(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                upstream = connect()
            except OSError:
                self.request.close()
                return
            _join(self.request, upstream)

    return Forward


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def available() -> bool:
    """Whether this process may make a network namespace (root, or a kernel that allows it)."""
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-n", "--", "true"], capture_output=True, timeout=10, check=False)
        return probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Bridge:
    """Unix sockets in a temporary folder, each piped to 127.0.0.1:PORT in this namespace."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.isolated = available()
        self._folder = Path(tempfile.mkdtemp(prefix="netns-"))
        self._servers: list[_UnixServer] = []

    def __enter__(self) -> Bridge:
        if self.isolated:
            for port in self.ports:
                server = _UnixServer(str(self.socket(port)), _handler(lambda port=port: _tcp_connection(port)))
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
                self._servers.append(server)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def socket(self, port: int) -> Path:
        return self._folder / f"{port}.sock"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        if not self.isolated:
            return list(argv)
        forwards = [f"--forward={port}={self.socket(port)}" for port in self.ports]
        return ["unshare", "-n", "--", sys.executable, str(Path(__file__).resolve()), *forwards, "--", *argv]


def fallback_env(env: dict[str, str]) -> dict[str, str]:
    """Without a namespace: every proxied request goes to a closed port; only loopback goes direct."""
    dead = "http://127.0.0.1:9"
    direct = "127.0.0.1,localhost"
    return {**env, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead, "http_proxy": dead,
            "https_proxy": dead, "all_proxy": dead, "NO_PROXY": direct, "no_proxy": direct}


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="inside `unshare -n`: forward ports, then run a command")
    parser.add_argument("--forward", action="append", default=[], metavar="PORT=SOCKET")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    _loopback_up()
    for item in args.forward:
        port, path = item.split("=", 1)
        server = _TcpServer(("127.0.0.1", int(port)),
                            _handler(lambda path=path: _unix_connection(path)))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    done = subprocess.run(command, check=False)
    sys.stdout.flush()
    os._exit(done.returncode)  # daemon threads may sit in recv(); leave without waiting for them


def _tcp_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 10)
    sock.settimeout(None)  # the 10 s were for connecting: an answer may take longer
    return sock


def _unix_connection(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    sock.settimeout(None)
    return sock


if __name__ == "__main__":
    sys.exit(main())
