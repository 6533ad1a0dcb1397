"""Keeping passwords out of messages: URIs redacted, known secrets scrubbed.

Every message that can reach a user (an error, the history, a crash log, git's own output)
passes through ``scrub_secrets``. A module of its own, without a store or a driver, so that
``edges/git.py`` and whatever starts fast (the hooks) can scrub without importing a store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ``***`` (the user name is kept, to help).

    The user info ends at the last ``@`` before the first ``/`` (pymongo's reading) or before
    the first ``?`` (a password holding an unescaped ``/``), whichever comes later: when the two
    readings differ, more is hidden rather than less.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return uri
    end = _userinfo_end(rest)
    user, colon, _password = rest[:end].partition(":")
    if end < 0 or not colon:
        return uri
    return f"{scheme}://{user}:***@{rest[end + 1 :]}"


def _userinfo_end(rest: str) -> int:
    first_slash = _find_or_end(rest, "/")
    first_query = _find_or_end(rest, "?")
    return max(rest.rfind("@", 0, first_slash), rest.rfind("@", 0, first_query))


def _find_or_end(text: str, char: str) -> int:
    index = text.find(char)
    return len(text) if index < 0 else index


def uri_secrets(uri: str) -> tuple[str, ...]:
    """The password of a URI as written and percent-decoded, longest first, for scrubbing.

    Even a short password is scrubbed: a garbled message is better than a leaked password.
    """
    _scheme, separator, rest = uri.partition("://")
    end = _userinfo_end(rest)
    _user, colon, password = rest[: max(end, 0)].partition(":")
    if not separator or end < 0 or not colon or not password:
        return ()
    from urllib.parse import unquote_plus  # with ipaddress, 2 ms: only when there is a password

    return tuple(sorted({password, unquote_plus(password)}, key=len, reverse=True))


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")


def scrub_secrets(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every URI redacted and every known secret replaced by ``***``.

    Driver messages name hosts and sometimes echo the URI; the literal replacement also catches
    a password that appears outside any URI.
    """
    text = _URI_IN_TEXT.sub(lambda match: redact_uri(match.group(0)), text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
