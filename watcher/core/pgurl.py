"""libpq connection URLs (`postgresql://user:password@host:port/db?key=value`), as text.

Pure: split a URL into its parts, fold a password into it, name every form of
the password it carries (for redaction), and describe it without the password.
Nothing here connects; libpq reads the URL as given, so anything this module
does not need (host lists, `service=`, `sslmode=`) passes through untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote

SCHEMES = ("postgresql", "postgres")
EXAMPLE_URL = "postgresql://user@host:5432/dbname"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# libpq takes a password in the user info or as a `password=` parameter.
_PASSWORD_PARAMETER = "password"  # noqa: S105 - a parameter name, not a value


@dataclass(frozen=True, slots=True)
class PgUrl:
    """One libpq URL split into its parts; `*_raw` are as written (percent-encoded)."""

    scheme: str
    user_raw: str | None
    password_raw: str | None
    hosts: str
    database_raw: str
    query: tuple[tuple[str, str], ...]
    query_raw: str

    @property
    def user(self) -> str | None:
        """The user name, decoded."""
        return None if self.user_raw is None else unquote(self.user_raw)

    @property
    def password(self) -> str | None:
        """The password in the user info, decoded (None: none there)."""
        return None if self.password_raw is None else unquote(self.password_raw)

    @property
    def query_password(self) -> str | None:
        """A `password=` parameter, decoded (None: none there)."""
        for key, value in self.query:
            if key == _PASSWORD_PARAMETER:
                return value
        return None

    @property
    def has_password(self) -> bool:
        """Whether the URL itself carries a password, in either place."""
        return self.password_raw is not None or self.query_password is not None

    @property
    def database(self) -> str:
        """The database name, decoded (empty: libpq's default)."""
        return unquote(self.database_raw)


def parse_pg_url(url: str) -> PgUrl:
    """Split a libpq URL; ValueError (never quoting the URL, which may hold a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"expected a PostgreSQL URL such as {EXAMPLE_URL}")
    if scheme.lower() not in SCHEMES:
        shown = f"'{scheme}://'" if _SCHEME.fullmatch(scheme) and len(scheme) <= 20 else "another"
        raise ValueError(
            f"expected a postgresql:// URL such as {EXAMPLE_URL}, not {shown} "
            "(state.url selects the PostgreSQL state; use state.path for SQLite)"
        )
    if "#" in rest:
        raise ValueError("a PostgreSQL URL has no '#fragment' (percent-encode '#' as %23)")
    rest, _, query_raw = rest.partition("?")
    authority, _, database_raw = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    user_raw: str | None = None
    password_raw: str | None = None
    if at:
        user_raw, colon, password = userinfo.partition(":")
        password_raw = password if colon else None
        user_raw = user_raw or None
    try:
        query = tuple(parse_qsl(query_raw, keep_blank_values=True, strict_parsing=bool(query_raw)))
    except ValueError:
        raise ValueError("the URL's ?query must be key=value pairs joined by '&'") from None
    return PgUrl(
        scheme=scheme.lower(),
        user_raw=user_raw,
        password_raw=password_raw,
        hosts=hosts,
        database_raw=database_raw,
        query=query,
        query_raw=query_raw,
    )


def with_password(url: str, password: str) -> str:
    """`url` with `password` folded in: in the user info when it names a user, else as a
    `password=` parameter (libpq reads both). `url` must carry no password yet."""
    parts = parse_pg_url(url)
    encoded = quote(password, safe="")
    if parts.user_raw is not None:
        head = f"{parts.scheme}://{parts.user_raw}:{encoded}@{parts.hosts}/{parts.database_raw}"
        return head + (f"?{parts.query_raw}" if parts.query_raw else "")
    query = f"{parts.query_raw}&" if parts.query_raw else ""
    return f"{parts.scheme}://{parts.hosts}/{parts.database_raw}?{query}password={encoded}"


def url_passwords(url: str) -> tuple[str, ...]:
    """Every form of the password `url` carries: decoded and as written, in either place."""
    try:
        parts = parse_pg_url(url)
    except ValueError:
        return ()
    found: list[str] = []
    if parts.password_raw:
        found += [parts.password_raw, unquote(parts.password_raw)]
    for key, value in parse_qsl(parts.query_raw, keep_blank_values=True):
        if key == _PASSWORD_PARAMETER and value:
            found.append(value)
    for piece in parts.query_raw.split("&"):
        key, _, value = piece.partition("=")
        if key == _PASSWORD_PARAMETER and value:
            found.append(value)
    return tuple(dict.fromkeys(found))


def describe_pg_url(url: str) -> str:
    """`url` without its password or parameters other than `service` (safe to show)."""
    try:
        parts = parse_pg_url(url)
    except ValueError:
        return "PostgreSQL (unreadable URL)"
    user = f"{parts.user_raw}@" if parts.user_raw else ""
    service = [value for key, value in parts.query if key == "service"]
    tail = f"?service={quote(service[0], safe='')}" if service else ""
    return f"{parts.scheme}://{user}{parts.hosts}/{parts.database_raw}{tail}"
