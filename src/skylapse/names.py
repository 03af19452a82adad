"""The rules for names that end up in file paths, file lists and command lines.

A station or session name becomes a folder (``<buffer>/<day>/<session>/``,
``<inbox>/<station>/``), a line of an rsync file list and of a SHA-256 manifest, and part of an
MQTT topic. So it may hold only what none of those treats specially: 1 to 64 ASCII letters,
digits, ``_`` and ``-``, not starting with ``-`` (no separators, no spaces, no control
characters, nothing a program could read as an option). The same goes, in its own syntax, for
the SSH host and user that the transfer and ``skylapse doctor`` put on an ``ssh`` command line.

API
---
``NAME_PATTERN``                      the name rule as an anchored regex (pydantic, OpenAPI).
``check_name(value, field) -> str``   the value, or ValueError naming ``field``.
``Name``                              a pydantic ``Annotated`` string type holding the rule.
``check_host(value, field)``, ``check_user(value, field)``, ``check_port(value, field)``
                                      the same for an SSH target; ``Hostname`` and ``SshUser``
                                      are their pydantic types.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

_NAME_BODY = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}"
#: Station and session names. The anchors are end-of-text in pydantic's (Rust) regex engine;
#: Python's ``$`` would also match before a final newline, so `check_name` uses ``fullmatch``.
NAME_PATTERN = rf"^{_NAME_BODY}$"
NAME_RULE = "1 to 64 letters, digits, '_' or '-', not starting with '-'"

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# POSIX portable user names (what useradd accepts by default).
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")


def check_name(value: str, field: str) -> str:
    """``value`` when it is a valid station or session name; else ValueError naming ``field``."""
    if not isinstance(value, str) or re.fullmatch(_NAME_BODY, value) is None:
        raise ValueError(_message(field, f"{value!r} is not a valid name ({NAME_RULE})"))
    return value


def check_host(value: str, field: str = "host") -> str:
    """A host name or an IP address (IPv6 with or without brackets); ValueError naming
    ``field`` for anything else (``-oProxyCommand=...``)."""
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(bare)
        return value
    except ValueError:
        pass
    if len(value) > 253 or _HOSTNAME.fullmatch(value) is None:
        raise ValueError(_message(field, f"{value!r} is not a host name or IP address"))
    return value


def check_user(value: str, field: str = "user") -> str:
    """A user name (letters, digits, ``._-``, not starting with ``-`` or a digit)."""
    if _USER.fullmatch(value) is None:
        raise ValueError(_message(field, f"{value!r} is not a valid user name"))
    return value


def check_port(value: int, field: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(_message(field, f"{value!r} is not a TCP port (1..65535)"))
    return value


def _message(field: str, problem: str) -> str:
    return f"{field}: {problem}" if field else problem


def _pydantic(check):
    # pydantic puts the field's location in front of the message itself
    return AfterValidator(lambda value: check(value, ""))


#: A station or session name, for pydantic models and FastAPI parameters.
Name = Annotated[str, Field(pattern=NAME_PATTERN), _pydantic(check_name)]
Hostname = Annotated[str, _pydantic(check_host)]
SshUser = Annotated[str, _pydantic(check_user)]
