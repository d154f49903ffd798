"""Reading the project's Markdown the way the docs tests need it: fenced blocks by label, links, headings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(```+|~~~+)(.*)$")
LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out (by default)."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if fence is None and m:
            fence = m.group(1)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        out.append((number, INLINE_CODE.sub("``", line) if blank_code else line))
    return out


def fenced_block(text: str, label: str) -> str:
    """The body of the fenced block whose info string's words include `label` (e.g. ```sh make-run-example)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = FENCE.match(line.strip())
        if m and label in m.group(2).split():
            fence = m.group(1)
            body = []
            for inner in lines[i + 1 :]:
                if inner.strip().startswith(fence) and not inner.strip().strip(fence[0]):
                    return "\n".join(body) + "\n"
                body.append(inner)
            raise AssertionError(f"the ``` {label} block is not closed")
    raise AssertionError(f"no fenced block labelled {label!r}")


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline, image and reference-style link outside code."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        for pattern in (LINK, IMAGE):
            found.extend((number, m.group(1)) for m in pattern.finditer(line))
        m = REFERENCE.match(line)
        if m:
            found.append((number, m.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(text, blank_code=False):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def fenced_blocks(text: str) -> list[tuple[int, list[str], str]]:
    """Every fenced block: (line number of its opening fence, the info string's words, body)."""
    out: list[tuple[int, list[str], str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        fence, start, body = m.group(1), i, []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and not lines[i].strip().strip(fence[0])):
            body.append(lines[i])
            i += 1
        out.append((start + 1, m.group(2).split(), "\n".join(body) + "\n"))
        i += 1
    return out


def shell_commands(block: str) -> list[str]:
    """A shell block's commands, one per entry: continuation lines joined, blank and comment lines dropped."""
    commands: list[str] = []
    pending = ""
    for raw in block.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending.rstrip())
    return commands
