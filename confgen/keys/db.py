"""PostgreSQL connections for keys and the ledger: DATABASE_URL without its password in every message,
clear errors when the server is down, and the database created when it is missing."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from confgen.errors import EXIT_FAILED, ConfgenError

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/confgen"
CONNECT_TIMEOUT_S = 3
FIX = "start PostgreSQL, or point DATABASE_URL (vars.env or the environment) at a running server"


# libpq's connection parameters that hold a secret (PostgreSQL docs, "Parameter Key Words":
# https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS).
LIBPQ_SECRETS = ("password", "sslpassword")
HIDDEN = "***"
# key=value whose key names a secret, in a query string or a keyword conninfo. The value is a quoted string
# (one left open runs to the end) or runs to the next "&key=" or " key=": written unquoted, a password with
# a space or "&" does not parse, and all of it is hidden.
_SECRET_PAIR = re.compile(
    r"""(\b[\w.%-]*(?:pass|pwd|secret|token|key|credential)[\w.%-]*\s*=\s*)"""
    r"""('(?:[^'\\]|\\.)*'?|(?:[^\s&]|[\s&]+(?![\s&]*[\w.%-]+\s*=))*)""",
    re.IGNORECASE,
)


def redact(url: str) -> str:
    """The connection string as it may be shown: every password replaced by ***.

    PostgreSQL URLs and keyword strings are read with libpq's own parser (psycopg.conninfo), and the
    shown text is parsed again to prove no password is left; other URLs (redis://) and strings libpq
    cannot parse get the text rule only, which hides more rather than less.
    """
    if "://" in url and url.split("://", 1)[0].lower() not in ("postgresql", "postgres"):
        return _hide_in_text(url)
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return _hide_in_text(url)
    shown = _hide_in_text(url)  # also when libpq sees no password: "u:pa/ss@h" reads as port "pa"
    secrets = {key: HIDDEN for key in LIBPQ_SECRETS if key in params}
    return shown if not secrets or _hides_all(shown) else make_conninfo(url, **secrets)


def _hide_in_text(text: str) -> str:
    """user:password@ -> user:***@, then the value of each secret key=value. The password runs to the last "@"
    before the query, or of the whole text: it may hold "/" or "?" (unencoded, libpq would misread it)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    before_query = rest.split("?", 1)[0]
    end = before_query.rfind("@") if "@" in before_query else rest.rfind("@")
    if end > 0 and ":" in rest[:end]:
        rest = f"{rest[:end].split(':', 1)[0]}:{HIDDEN}{rest[end:]}"
    return _SECRET_PAIR.sub(rf"\g<1>{HIDDEN}", scheme + sep + rest)


def _hides_all(shown: str) -> bool:
    try:
        params = conninfo_to_dict(shown)
    except psycopg.ProgrammingError:
        return False
    return all(params.get(key) in (None, HIDDEN) for key in LIBPQ_SECRETS)


def libpq_message(exc: BaseException, url: str) -> str:
    """libpq's first line about a string it cannot parse, without the pieces of the string it quotes (a
    password among them); the syntax it quotes, one sign like "=" or "]", stays."""
    text = first_line(exc)
    if '"' in url:
        return text.split('"', 1)[0].rstrip(" :") + " ..."  # a quote in the string: pairs cannot be told apart
    return re.sub(r'"([^"]*)"', lambda quoted: quoted[0] if re.fullmatch(r"[^\w\s]", quoted[1]) else '"..."', text)


def database_name(url: str) -> str:
    return str(conninfo_to_dict(url).get("dbname") or "")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _missing_database(exc: psycopg.OperationalError) -> bool:
    return exc.sqlstate == "3D000" or "does not exist" in str(exc)


def connect(url: str, *, autocommit: bool = True, timeout: float = CONNECT_TIMEOUT_S) -> psycopg.Connection:
    """A connection, or a ConfgenError naming the server (no password) and the fix."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, round(timeout)))
    except psycopg.OperationalError as exc:
        if _missing_database(exc):
            raise ConfgenError.one(f"DATABASE_URL={redact(url)}", f"database {database_name(url)!r} does not exist",
                                   "run ./runMe.sh once (it creates it) or `createdb` it", EXIT_FAILED) from None
        raise ConfgenError.one(f"DATABASE_URL={redact(url)}", f"PostgreSQL is not reachable: {first_line(exc)}",
                               FIX, EXIT_FAILED) from None
    except psycopg.ProgrammingError as exc:
        raise ConfgenError.one(f"DATABASE_URL={redact(url)}",
                               f"not a usable connection string: {libpq_message(exc, url)}",
                               "write it as postgresql://user[:password]@host:port/dbname") from None


def ensure_database(url: str) -> bool:
    """Create the database of `url` when the server runs but lacks it. True if it was created."""
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
        return False
    except psycopg.OperationalError as exc:
        if not _missing_database(exc):
            raise ConfgenError.one(f"DATABASE_URL={redact(url)}", f"PostgreSQL is not reachable: {first_line(exc)}",
                                   FIX, EXIT_FAILED) from None
    except psycopg.ProgrammingError:
        connect(url)  # raises the clean message
    name = database_name(url)
    with connect(make_conninfo(url, dbname="postgres")) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created meanwhile by another process
        except psycopg.Error as exc:
            raise ConfgenError.one(f"DATABASE_URL={redact(url)}", f"cannot create database {name!r}: {first_line(exc)}",
                                   "create it yourself (createdb) or use a role that may", EXIT_FAILED) from None
    return True
