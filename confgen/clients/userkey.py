"""The key a user's coding agents send: made once in the key store (`confgen keys`, PostgreSQL at
DATABASE_URL), kept in the user's config folder (~/.config/confgen/keys/<alias>.key, mode 0600, the folder
0700) and reused while the store says it is active; a revoked or expired one is replaced.

When the key store cannot be reached that is an error, never a silent switch to the master key
(secrets/LITELLM_MASTER_KEY, which may call every route): the client gets it only when asked
(`--master-key`). `--key-file` skips all of this.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from confgen.atomic import write_atomic
from confgen.clients.endpoint import MASTER_KEY_FILE, KeyRef, home
from confgen.errors import EXIT_FAILED, ConfgenError
from confgen.keys import db, migrations, store
from confgen.load import Project, load_vars


@dataclass(frozen=True)
class UserKey:
    ref: KeyRef
    value: str
    created: bool = False
    warning: str = ""  # why this key deserves a second look (the master key, asked for)

    def with_value_shown(self, show: bool) -> UserKey:
        if not show:
            return self
        ref = KeyRef(self.ref.path, self.ref.label, self.ref.env, self.value)
        return UserKey(ref, self.value, self.created, self.warning)


def user_name(environ: Mapping[str, str]) -> str:
    return environ.get("USER") or environ.get("LOGNAME") or getpass.getuser()


def default_alias(environ: Mapping[str, str]) -> str:
    """<user>-agents, within the key store's alias rules."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", user_name(environ)).strip("-._")[:56] or "user"
    return f"{clean}-agents"


def key_dir(environ: Mapping[str, str]) -> Path:
    config_home = environ.get("XDG_CONFIG_HOME")
    return (Path(config_home) if config_home else home(environ) / ".config") / "confgen" / "keys"


def read_key(path: Path, where: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfgenError.one(where, f"cannot read {path}: {exc}", "point it at a file holding the key") from None
    if not value or "\n" in value:
        raise ConfgenError.one(where, f"{path} does not hold one key", "write the key alone on one line")
    return value


def from_file(path: Path) -> UserKey:
    path = path.resolve()
    return UserKey(KeyRef(path, f"the key in {path}"), read_key(path, "--key-file"))


def master(project: Project) -> UserKey:
    path = (project.secrets_dir / MASTER_KEY_FILE).resolve()
    if not path.is_file():
        raise ConfgenError.one(project.rel(path), "missing: there is no key to give the client",
                               "start the stack once (./runMe.sh creates it) or pass --key-file", exit_code=3)
    label = f"the master key ({project.rel(path)})"
    return UserKey(KeyRef(path, label), read_key(path, project.rel(path)),
                   warning=f"using {label}, as asked (--master-key): it may call every route, key administration too")


def for_user(project: Project, environ: Mapping[str, str], alias: str) -> UserKey:
    """The user's key: reused if its file holds an active key, else made now; an error when the store is down."""
    url = load_vars(project, dict(environ)).settings.DATABASE_URL
    try:
        db.ensure_database(url)
        conn = db.connect(url)
    except ConfgenError as exc:
        raise ConfgenError.one(
            f"DATABASE_URL={db.redact(url)}", f"the key store is unreachable ({exc.problems[0].what})",
            "start PostgreSQL or point DATABASE_URL at a running server (you then get a key of your own), "
            "pass --key-file FILE, or pass --master-key to give the client the master key", EXIT_FAILED) from None
    path = key_dir(environ) / f"{alias}.key"
    with conn:
        migrations.migrate(conn)
        reused = _active(conn, path)
        if reused is not None:
            return UserKey(KeyRef(path, f"your key {alias!r} (prefix {reused[1]}, {path})"), reused[0])
        try:
            key, record = store.create(conn, store.NewKey(alias=alias, owner=user_name(environ)))
        except ConfgenError as exc:
            problem = exc.problems[0]
            raise ConfgenError.one(problem.where, problem.what, f"{problem.fix}, or pass --alias NEW or --key-file "
                                   "FILE") from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, key + "\n", mode=0o600)
    return UserKey(KeyRef(path, f"your key {alias!r} (prefix {record.prefix}, made now, kept in {path})"), key,
                   created=True)


def _active(conn: psycopg.Connection, path: Path) -> tuple[str, str] | None:
    """(key, prefix) when the file holds a key the store knows as active."""
    if not path.is_file():
        return None
    key = read_key(path, str(path))
    try:
        record = store.find(conn, key)
    except ConfgenError:
        return None  # unknown to this database (another gateway's, or the database was reset)
    return (key, record.prefix) if record.status(datetime.now(UTC)) == "active" else None
