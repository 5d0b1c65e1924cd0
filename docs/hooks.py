"""MkDocs hook: code names for Sphinx roles, and formulas as MathML.

The code's docstrings use Sphinx roles (``:class:`X```), which mkdocstrings leaves as
text: they are shown as the code names they are.

Formulas (``$...$`` inline, ``$$...$$`` as a block) are marked by
``pymdownx.arithmatex`` (generic mode) and converted here, at build time, to MathML,
which browsers render natively: the site needs no MathJax, no CDN and no JavaScript
for them, and reads the same offline.
"""

import html
import re

from latex2mathml.converter import convert

_ROLE = re.compile(r":(?:class|func|data|mod|meth|attr|exc):<code>(~?)([^<]+)</code>")
# what pymdownx.arithmatex (generic: true) writes for $...$ and $$...$$
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
# a figure with its spread, "0.805 ± 0.025", in a table cell: kept on one line (extra.css)
_CELL = re.compile(r"(<td[^>]*>)(.*?)(</td>)", re.S)
_SPREAD = re.compile(r"(?<![\w.])\d+(?:\.\d+)? ± \d+(?:\.\d+)?(?![\w.])")


def _name(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def mathml(tex: str, display: str = "inline") -> str:
    """Return the MathML of a TeX formula (as arithmatex escaped it into the HTML)."""
    return convert(html.unescape(tex).strip(), display=display)


def _unbroken(cell: re.Match[str]) -> str:
    start, text, end = cell.groups()
    return start + _SPREAD.sub(lambda m: f'<span class="pm">{m.group(0)}</span>', text) + end


def on_page_content(html_text: str, **kwargs: object) -> str:
    """Replace roles by the code alone and formulas by MathML; keep figures unbroken."""
    html_text = _ROLE.sub(_name, html_text)
    html_text = _CELL.sub(_unbroken, html_text)
    html_text = _BLOCK.sub(
        lambda m: f'<div class="arithmatex">{mathml(m.group(1), "block")}</div>', html_text
    )
    return _INLINE.sub(lambda m: mathml(m.group(1)), html_text)
