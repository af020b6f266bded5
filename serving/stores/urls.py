"""Store URLs: hiding their passwords (for /ready, logs and errors) and reading SQLite paths."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for /ready, logs and error messages.

    Handles URLs (``scheme://user:secret@host/db?password=secret``) and libpq's ``key=value``
    connection strings (``host=… password=secret``), the two forms a DSN may take.
    """
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    if "@" not in url and "password" not in url.lower():
        return url  # nothing to hide (and urlunsplit would turn sqlite:////abs into sqlite://abs)
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{host}"
        query = parts.query
        if query:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
            query = urllib.parse.urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/:")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not parseable as a URL: show nothing after the scheme rather than a secret
        return url.split("://", 1)[0] + "://***"


def sqlite_path(url: str) -> Path:
    """The file named by ``sqlite:///ABSOLUTE/PATH`` or ``sqlite:RELATIVE/PATH`` (relative to the cwd).

    ``sqlite://HOST/…`` (two slashes: a host) names no file and is refused, as is an empty path.
    """
    if not url.startswith("sqlite:"):
        raise ValueError(f"not a sqlite URL: {redact_url(url)!r}")
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        rest = "/" + rest.lstrip("/")  # an absolute path (sqlite:////abs, SQLAlchemy's form, too)
    elif rest.startswith("//"):
        raise ValueError(
            f"sqlite URL {url!r} names a host; use sqlite:///ABSOLUTE/PATH.sqlite or sqlite:RELATIVE/PATH.sqlite"
        )
    if not rest.strip("/ ") or rest.endswith("/"):
        raise ValueError(f"sqlite URL {url!r} names no file; use sqlite:///ABSOLUTE/PATH.sqlite")
    return Path(rest).expanduser()
