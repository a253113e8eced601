"""PostgreSQL connections for keys and the ledger: DATABASE_URL without its password in every message,
clear errors when the server is down, and the database created when it is missing."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from confgen.errors import EXIT_FAILED, ConfgenError

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/confgen"
CONNECT_TIMEOUT_S = 3
FIX = "start PostgreSQL, or point DATABASE_URL (vars.env or the environment) at a running server"


def redact(url: str) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    if "://" in url:
        try:
            parts = urlsplit(url)
            if parts.password is None:
                return url
            host = parts.netloc.rsplit("@", 1)[1]
            return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        except ValueError:  # not even a URL: hide whatever sits between "user:" and "@"
            return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", url)


def database_name(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url).get("dbname") or "")


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
        raise ConfgenError.one(f"DATABASE_URL={redact(url)}", f"not a usable connection string: {first_line(exc)}",
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
