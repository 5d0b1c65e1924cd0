"""fedcl's user-facing error: one message naming what was received and what is allowed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FedclError(ValueError):
    """Bad user input (config key, value, name or file); the CLI prints it, exit 2."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> FedclError:
    """Build the error for a name that is not in ``known``, with a did-you-mean."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return FedclError(f"unknown {kind} {name!r}; known: {', '.join(known)}.{hint}")
