"""Markdown for letters: CommonMark with typographic quotes, plus callout and button blocks.

`::: callout` … `:::` sets a passage apart (a bordered box in HTML, ruled lines in
the text part); `::: button` … `:::` around a link makes it a button that every
client draws, Outlook included, with the plain URL under it for copying (README,
"Writing the course").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import escape
from mdit_py_plugins.container import container_plugin

CALLOUT = "callout"
BUTTON = "button"
# Tables, not divs: Outlook for Windows draws borders, padding and colours only on cells.
_TABLE = '<table role="presentation" class="{0}" cellpadding="0" cellspacing="0" border="0"{1}>'


def markdown() -> MarkdownIt:
    """A Markdown parser and HTML renderer for lesson sources and broadcast bodies."""
    md = MarkdownIt("commonmark", {"typographer": True}).enable(["replacements", "smartquotes"])
    container_plugin(md, CALLOUT, render=_callout)
    container_plugin(md, BUTTON, render=_button)
    return md


def _callout(_renderer: Any, tokens: Sequence[Token], idx: int, _options: Any, _env: Any) -> str:
    if tokens[idx].nesting == 1:
        opening = _TABLE.format(CALLOUT, ' width="100%"')
        return f'{opening}<tr><td class="{CALLOUT}-cell">\n'
    return "</td></tr></table>\n"


def _button(_renderer: Any, tokens: Sequence[Token], idx: int, _options: Any, _env: Any) -> str:
    if tokens[idx].nesting == 1:
        return f'{_TABLE.format(BUTTON, "")}<tr><td class="{BUTTON}-cell">\n'
    href = _last_link(tokens, idx)
    if not href:
        return "</td></tr></table>\n"
    url = escape(href)
    return f'</td></tr></table>\n<p class="plain-url"><a href="{url}">{url}</a></p>\n'


def _last_link(tokens: Sequence[Token], idx: int) -> str:
    """The target of the last link inside the button that tokens[idx] closes."""
    for token in reversed(tokens[:idx]):
        if token.type == f"container_{BUTTON}_open":
            break
        for child in reversed(token.children or []):
            if child.type == "link_open":
                return str(child.attrGet("href") or "")
    return ""
