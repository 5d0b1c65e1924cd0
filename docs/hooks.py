"""MkDocs hook: show the docstrings' Sphinx roles as the code names they are.

The code's docstrings use Sphinx roles (``:class:`X```), which mkdocstrings leaves as
text.
"""

import re

_ROLE = re.compile(r":(?:class|func|data|mod|meth|attr|exc):<code>(~?)([^<]+)</code>")


def _name(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    """Replace ``:role:`target``` (rendered as text and code) by the code alone."""
    return _ROLE.sub(_name, html)
