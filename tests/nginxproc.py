"""Run Debian's nginx on a config from `confgen nginx`, as a real foreground process, for tests and benchmarks.

    from tests.nginxproc import make_certs, nginx_test, running_nginx

    certs = make_certs(folder)                  # scripts/certs.sh: ca.crt, server.crt, server.key
    nginx.write(selection, options, out)        # confgen.render.nginx
    nginx_test(out)                             # `nginx -t`: raises with nginx's own message
    with running_nginx(out, https_port) as proc: ...

The prefix (`-p out`) holds nginx.pid, logs/ and tmp/. When run as root, nginx's workers run as
`nobody`, so the prefix folder must be readable by others: `prefix_folder()` makes one that is.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx (it is in requirements/apt.txt)")
    return found


def prefix_folder(prefix: str = "nginx-") -> Path:
    """A fresh folder under the system temp dir that nginx's unprivileged workers can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def make_certs(folder: Path) -> Path:
    subprocess.run([str(ROOT / "scripts" / "certs.sh"), str(folder)], check=True, capture_output=True, timeout=60)
    return folder


def nginx_test(out: Path) -> str:
    """`nginx -t` on out/nginx.conf; returns its report, raises AssertionError with it on failure."""
    done = subprocess.run([nginx_binary(), "-t", "-p", f"{out}/", "-c", "nginx.conf"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, f"nginx -t failed for {out}/nginx.conf:\n{done.stderr}"
    return done.stderr


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_nginx(out: Path, port: int, ready_timeout: float = 15.0) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground on out/nginx.conf until the block ends (then SIGQUIT, SIGKILL after 5 s)."""
    if _accepts(port):
        raise RuntimeError(f"port {port} is already in use: stop what listens there first")
    log = (out / "stderr.log").open("wb")
    proc = subprocess.Popen([nginx_binary(), "-p", f"{out}/", "-c", "nginx.conf", "-g", "daemon off;"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + ready_timeout
        while not _accepts(port):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"nginx did not start on {port}:\n{(out / 'stderr.log').read_text()}\n"
                                   f"{_read(out / 'logs' / 'error.log')}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def cleanup(path: Path) -> None:
    if path.exists() and path.is_relative_to(Path(tempfile.gettempdir())):
        shutil.rmtree(path, ignore_errors=True)

