"""Refuse to start on a taken port: LiteLLM would silently move to a random one (FINDINGS)."""

from __future__ import annotations

import errno
import socket

from confgen.errors import LaunchError, Problem


def problem(host: str, port: int, who: str, setting: str) -> Problem | None:
    """Why `host:port` cannot be bound (a Problem saying what to do), or None when it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Problem(f"{who} port {host}:{port}", "already in use by another process",
                               f"stop that process (`ss -ltnp 'sport = :{port}'` shows it) or set {setting} to a "
                               "free port")
            return Problem(f"{who} port {host}:{port}", f"cannot bind: {exc.strerror}", f"check {setting}")
    return None


def ensure_free(host: str, port: int, who: str, setting: str) -> None:
    found = problem(host, port, who, setting)
    if found is not None:
        raise LaunchError(found.where, found.what, found.fix)
