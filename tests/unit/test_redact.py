"""confgen.keys.db.redact: every password form hidden, read with libpq's own parser (psycopg.conninfo);
what libpq cannot parse, and other URLs, by a text rule that hides more rather than less."""

from __future__ import annotations

import psycopg
import pytest

from confgen.errors import ConfgenError
from confgen.keys.db import connect, redact

# (given, shown, the secret that must not be shown)
CASES = [
    # userinfo
    ("postgresql://app:pw-1@db:5432/confgen", "postgresql://app:***@db:5432/confgen", "pw-1"),
    ("postgres://u:pw-1@h1:5432,h2:5433/db", "postgres://u:***@h1:5432,h2:5433/db", "pw-1"),
    ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db", "p%40ss"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db", "ss@"),  # libpq: password "p", host "ss@h"
    ("postgresql://u:p?x@h/db", "postgresql://u:***@h/db", "p?x"),  # libpq: password "p?x"
    ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db", "pa/ss"),  # libpq: port "pa", no password
    ("postgresql://u:s3cret@h/db?application_name=a@b", "postgresql://u:***@h/db?application_name=a@b", "s3cret"),
    ("postgresql://postgres:s3cret@/confgen?host=/run/pg", "postgresql://postgres:***@/confgen?host=/run/pg",
     "s3cret"),
    # query string
    ("postgresql://u@h/db?password=s3cret", "postgresql://u@h/db?password=***", "s3cret"),
    ("postgresql://u:pw-1@h/db?password=q-2&sslpassword=r-3",
     "postgresql://u:***@h/db?password=***&sslpassword=***", "-"),
    ("postgresql://h/db?sslmode=require&password=s3cret", "postgresql://h/db?sslmode=require&password=***", "s3cret"),
    # a key the text rule misses (percent-encoded): libpq still finds it, the keyword form is shown
    ("postgresql://h/db?%70assword=s3cret", "password=*** dbname=db host=h", "s3cret"),
    # keyword conninfo
    ("host=db password=pw-1 dbname=confgen", "host=db password=*** dbname=confgen", "pw-1"),
    ("host=h password='a b'", "host=h password=***", "a b"),
    ("password = 'it\\'s' host=h", "password = *** host=h", "it"),
    ("sslpassword=zz-1 host=h", "sslpassword=*** host=h", "zz-1"),
    # unparseable: nothing between "user:" and "@", nor any secret key's value
    ("postgresql://x:y-1@[::1", "postgresql://x:***@[::1", "y-1"),
    ("postgresql:/u:pw-1@h", "postgresql:***@h", "pw-1"),
    ("postgresql://h/db?foo=1&password=s3cret", "postgresql://h/db?foo=1&password=***", "s3cret"),
    ("postgresql://h/db?password=a&b", "postgresql://h/db?password=***", "&b"),
    ("host=h password=a b-1", "host=h password=***", "b-1"),
    ("host=h password='a b-1", "host=h password=***", "b-1"),
    ("PASSWORD=s3cret host=h", "PASSWORD=*** host=h", "s3cret"),
    # other URLs
    ("redis://:pw-1@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0", "pw-1"),
    ("redis://user:pw-1@host", "redis://user:***@host", "pw-1"),
    ("rediss://h:6379/0?password=pw-1", "rediss://h:6379/0?password=***", "pw-1"),
    # nothing to hide: shown as given
    ("postgresql://postgres@127.0.0.1:5432/confgen", "postgresql://postgres@127.0.0.1:5432/confgen", None),
    ("host=/run/pg dbname=confgen", "host=/run/pg dbname=confgen", None),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", None),
    ("none", "none", None),
]


@pytest.mark.parametrize(("given", "shown", "secret"), CASES)
def test_redact(given: str, shown: str, secret: str | None) -> None:
    assert redact(given) == shown
    if secret is not None:
        assert secret not in shown


@pytest.mark.parametrize(("given", "shown", "secret"), [c for c in CASES if c[2] is not None])
def test_libpq_finds_no_password_in_what_is_shown(given: str, shown: str, secret: str) -> None:
    try:
        params = psycopg.conninfo.conninfo_to_dict(shown)
    except psycopg.ProgrammingError:
        return  # not libpq's (redis://) or not parseable: the text rule above is all there is
    assert params.get("password") in (None, "***")
    assert params.get("sslpassword") in (None, "***")


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://x:s3cret@[::1", 'end of string reached when looking for matching "]" in IPv6 host address in '
                                   'URI: "..."'),
    ("postgresql:/u:s3cret@h", 'missing "=" after "..." in connection info string'),
    ("postgresql://u:s3cret%zz@h/db", 'invalid percent-encoded token: "..."'),
    ('host=h password=s3"cret junk', "missing ..."),  # a quote in it: libpq's detail is dropped
])
def test_libpq_messages_lose_what_they_quote(url: str, message: str) -> None:
    with pytest.raises(ConfgenError) as caught:
        connect(url)
    assert caught.value.problems[0].what == f"not a usable connection string: {message}"
    assert "s3cret" not in str(caught.value)
