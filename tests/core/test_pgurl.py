"""libpq URLs as text: split, password folded in, every password form named, described safely."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from watcher.core.pgurl import describe_pg_url, parse_pg_url, url_passwords, with_password


@pytest.mark.parametrize(
    ("url", "user", "password", "hosts", "database"),
    [
        ("postgresql://u@h:5432/db", "u", None, "h:5432", "db"),
        ("postgresql://u:p%40ss@h/db", "u", "p@ss", "h", "db"),
        ("postgresql://u:pa@ss@h/db", "u", "pa@ss", "h", "db"),
        ("postgres://h1:5432,h2:5433/db", None, None, "h1:5432,h2:5433", "db"),
        ("postgresql:///?service=watcher", None, None, "", ""),
        ("POSTGRESQL://u@[::1]:5432/my%20db", "u", None, "[::1]:5432", "my db"),
    ],
)
def test_a_url_splits_into_its_parts(
    url: str, user: str | None, password: str | None, hosts: str, database: str
) -> None:
    """User, password (decoded), host list as written and database split as libpq reads them."""
    parts = parse_pg_url(url)
    assert (parts.user, parts.password, parts.hosts, parts.database) == (
        user,
        password,
        hosts,
        database,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:hunter2@h/db", "not 'mysql://'"),
        ("hunter2-not-a-url", "expected a PostgreSQL URL such as"),
        ("sq!l://u:hunter2@h/db", "not another"),
        ("postgresql://u:hunter2@h/db#x", "no '#fragment'"),
        ("postgresql://u:hunter2@h/db?sslmode", "key=value pairs"),
    ],
)
def test_a_bad_url_is_refused_without_quoting_it(url: str, message: str) -> None:
    """The error says what is expected and never repeats the URL (it may hold a password)."""
    with pytest.raises(ValueError) as caught:
        parse_pg_url(url)
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "folded"),
    [
        ("postgresql://u@h:5432/db", "postgresql://u:s%3A%2F%40%20x@h:5432/db"),
        (
            "postgresql://u@h/db?sslmode=require",
            "postgresql://u:s%3A%2F%40%20x@h/db?sslmode=require",
        ),
        ("postgresql:///?service=fw", "postgresql:///?service=fw&password=s%3A%2F%40%20x"),
        ("postgresql://h/db", "postgresql://h/db?password=s%3A%2F%40%20x"),
    ],
)
def test_a_password_is_folded_in_percent_encoded(url: str, folded: str) -> None:
    """Into the user info when the URL names a user, else as `password=`; reserved characters
    encoded so that libpq reads back exactly the password given."""
    assert with_password(url, "s:/@ x") == folded
    assert conninfo_to_dict(folded)["password"] == "s:/@ x"  # as libpq itself reads it
    assert parse_pg_url(folded).password in ("s:/@ x", None)
    assert "s:/@ x" in url_passwords(folded)


@pytest.mark.parametrize(
    ("url", "forms"),
    [
        ("postgresql://u:p%40ss@h/db", ("p%40ss", "p@ss")),
        ("postgresql://u@h/db?password=p%2Bq", ("p+q", "p%2Bq")),
        ("postgresql://u@h/db", ()),
        ("postgresql://u:@h/db", ()),
        ("not a url", ()),
    ],
)
def test_every_form_of_the_password_is_named(url: str, forms: tuple[str, ...]) -> None:
    """Decoded and as written, in the user info or a `password=` parameter."""
    assert set(url_passwords(url)) == set(forms)


def test_a_description_leaves_out_the_password_and_other_parameters() -> None:
    """User, hosts, database and service stay; the password and e.g. sslkey paths go."""
    url = "postgresql://u:hunter2@h:5432/db?service=fw&password=hunter2&sslkey=/k"
    assert describe_pg_url(url) == "postgresql://u@h:5432/db?service=fw"
    assert describe_pg_url("garbage") == "PostgreSQL (unreadable URL)"
