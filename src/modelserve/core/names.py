"""Model names and versions that may reach the file system: checked before anything touches a path.

A model name is one path segment of the repository: letters, digits, ``_``, ``-`` and ``.``, not
starting with ``.``, at most 128 characters. That rules out ``..``, ``/``, ``\\``, NUL and every
encoded variant, because the check is an allow-list on the decoded string.
"""

from __future__ import annotations

import re

from modelserve.core.errors import ValidationError

__all__ = ["check_model_name", "check_version"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_VERSION = re.compile(r"[0-9]{1,18}|[A-Za-z][A-Za-z0-9_\-]{0,63}")


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`ValidationError` saying why."""
    if not _NAME.fullmatch(name):
        shown = name[:64].encode("unicode_escape").decode("ascii")
        raise ValidationError(
            f"invalid model name '{shown}': use 1-128 letters, digits, '_', '-' or '.', not starting with '.'"
        )
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is empty (server's choice), a decimal number or an alias name; else raise."""
    if version and not _VERSION.fullmatch(version):
        shown = version[:32].encode("unicode_escape").decode("ascii")
        raise ValidationError(
            f"invalid model version '{shown}': use a decimal number such as '1' or an alias such as 'production'"
        )
    return version
