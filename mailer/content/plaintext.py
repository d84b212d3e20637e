"""Plain-text rendering of Markdown tokens, so one lesson source gives both mail parts."""

from __future__ import annotations

import textwrap

from markdown_it.token import Token

WIDTH = 72
_UNDERLINE = {"h1": "=", "h2": "-"}


def render_text(tokens: list[Token], width: int = WIDTH) -> str:
    """Render markdown-it block tokens as wrapped plain text.

    Paragraphs are wrapped at `width`, lists keep their markers ('-' or '1.'),
    links read "label <url>", h1/h2 headings are underlined. A callout stands
    between two ruled lines; a button's link reads "label:" with its URL on the
    next line, so a long per-recipient URL never shares a line with words.
    """
    stack: list[list[str]] = [[]]  # blocks collected per open list, item or quote
    tight: list[bool] = []
    prefix: list[str] = []
    markers: list[str | int] = []
    label: str | None = None
    heading = ""
    button = False
    for token in tokens:
        kind = token.type
        if kind == "container_callout_open":
            stack.append([])
        elif kind == "container_callout_close":
            inside = "\n\n".join(stack.pop())
            rule = "".join(prefix) + "=" * (width - len("".join(prefix)))
            stack[-1].append(f"{rule}\n{inside}\n{rule}")
        elif kind in ("container_button_open", "container_button_close"):
            button = kind.endswith("open")
        elif kind in ("bullet_list_open", "ordered_list_open"):
            markers.append("-" if kind == "bullet_list_open" else int(token.attrGet("start") or 1))
            tight.append(False)
            stack.append([])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            markers.pop()
            joiner = "\n" if tight.pop() else "\n\n"
            items = stack.pop()
            stack[-1].append(joiner.join(items))
        elif kind == "list_item_open":
            marker = markers[-1]
            text = f"{marker}. " if isinstance(marker, int) else "- "
            if isinstance(marker, int):
                markers[-1] = marker + 1
            label = "".join(prefix) + text
            prefix.append(" " * len(text))
            stack.append([])
        elif kind == "list_item_close":
            prefix.pop()
            stack[-2].append("\n\n".join(stack.pop()))
        elif kind == "paragraph_open" and token.hidden and tight:
            tight[-1] = True
        elif kind == "blockquote_open":
            prefix.append("> ")
            stack.append([])
        elif kind == "blockquote_close":
            gap = "\n" + "".join(prefix).rstrip() + "\n"
            prefix.pop()
            stack[-2].append(gap.join(stack.pop()))
        elif kind == "heading_open":
            heading = token.tag
        elif kind == "heading_close":
            heading = ""
        elif kind == "hr":
            stack[-1].append("".join(prefix) + "* * *")
        elif kind in ("fence", "code_block"):
            lines = token.content.rstrip("\n").splitlines()
            stack[-1].append("\n".join("".join(prefix) + "    " + ln for ln in lines))
        elif kind == "inline":
            rest = "".join(prefix)
            block = _wrap(_inline(token.children or [], button), label or rest, rest, width)
            label = None
            if heading in _UNDERLINE:
                longest = max(len(line) for line in block.splitlines())
                block += "\n" + _UNDERLINE[heading] * longest
            stack[-1].append(block)
    return "\n\n".join(stack[0]) + "\n"


def _wrap(text: str, first: str, rest: str, width: int) -> str:
    lines = []
    for i, part in enumerate(text.split("\n")):
        lead = first if i == 0 else rest
        wrapped = textwrap.fill(
            part,
            width=width,
            initial_indent=lead,
            subsequent_indent=rest,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.append(wrapped or lead.rstrip())
    return "\n".join(lines)


def _inline(children: list[Token], button: bool = False) -> str:
    out: list[str] = []
    links: list[tuple[str, int]] = []  # (href, where its label starts in out)
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline", "html_inline"):
            out.append(child.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "link_open":
            links.append((str(child.attrGet("href") or ""), len(out)))
        elif kind == "link_close":
            url, start = links.pop()
            label = "".join(out[start:])
            if button and url:
                out.append(f":\n{url}")
            elif url and url not in (label, f"mailto:{label}"):
                out.append(f" <{url}>")
        elif kind == "image":
            out.append(child.content or "")
    return "".join(out)
