"""Object keys, file ids and presigned-URL anatomy: pure functions."""

from __future__ import annotations

import os
import posixpath
import re
import time
import uuid
from urllib.parse import unquote, urlsplit

MAX_KEY_BYTES = 1024  # S3's limit on a key, UTF-8 encoded
MAX_EXT_CHARS = 10
FALLBACK_EXT = ".bin"
# Characters a presigned URL carries unencoded: the frontend takes the key from the URL path as is,
# so a segment we build must need no percent-encoding.
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]{1,255}$")
_EXT_KEEP_RE = re.compile(r"[^a-z0-9]")


def uuid7(ms: int | None = None, rand: bytes | None = None) -> uuid.UUID:
    """RFC 9562 version 7: 48-bit Unix milliseconds, then random bits (what Civic OS's uuid_generate_v7 makes)."""
    ms = time.time_ns() // 1_000_000 if ms is None else ms
    rand = os.urandom(10) if rand is None else rand
    if len(rand) != 10:
        raise ValueError("uuid7 needs 10 random bytes")
    r = int.from_bytes(rand, "big")
    rand_a = (r >> 68) & 0xFFF
    rand_b = r & ((1 << 62) - 1)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def sanitize_extension(file_name: str) -> str:
    """The original's extension for its key: last dot of the last path element, lowercased, only
    [a-z0-9], at most 10 characters; otherwise '.bin'. The name comes from the browser, unchecked."""
    base = re.split(r"[/\\]", file_name)[-1]
    dot = base.rfind(".")
    if dot < 0:
        return FALLBACK_EXT
    ext = _EXT_KEEP_RE.sub("", base[dot + 1 :].lower())
    if not ext or len(ext) > MAX_EXT_CHARS:
        return FALLBACK_EXT
    return "." + ext


def key_problem(key: str) -> str | None:
    """Why a key is unsafe to sign or write, or None. Keys can come from job args (older callers)."""
    if not key:
        return "the key is empty"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"the key is longer than {MAX_KEY_BYTES} bytes"
    if key.startswith("/"):
        return "the key starts with '/'"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key):
        return "the key contains control characters"
    if "\\" in key:
        return "the key contains a backslash"
    segments = key.split("/")
    if any(s in (".", "..") for s in segments):
        return "the key contains a '.' or '..' segment"
    if any(s == "" for s in segments[:-1]) or segments[-1] == "":
        return "the key contains an empty segment ('//' or a trailing '/')"
    return None


def segment_problem(name: str, value: str) -> str | None:
    if not _SEGMENT_RE.match(value) or value in (".", ".."):
        return (
            f"{name} {value[:80]!r} cannot be part of a file's key: use 1..255 of the characters "
            "A-Z a-z 0-9 . _ ~ - (no '/')"
        )
    return None


def original_key(entity_type: str, entity_id: str, file_id: uuid.UUID | str, file_name: str) -> str:
    """Civic OS's layout: {entity_type}/{entity_id}/{file_id}/original{ext}."""
    return f"{entity_type}/{entity_id}/{file_id}/original{sanitize_extension(file_name)}"


def thumbnail_key(original: str, size_name: str, ext: str) -> str:
    """{dir of the original}/thumb-{size}.{ext}; an original with no directory gets its own prefix
    rather than sharing 'thumb-small.jpg' at the bucket's root with every other such file."""
    folder = posixpath.dirname(original)
    if not folder:
        return f"{original}-thumb-{size_name}.{ext}"
    return f"{folder}/thumb-{size_name}.{ext}"


def bucket_and_key_from_url(url: str) -> tuple[str, str]:
    """What the frontend does with a presigned URL: bucket = first path segment, key = the rest."""
    path = urlsplit(url).path.lstrip("/")
    bucket, _, key = path.partition("/")
    return unquote(bucket), unquote(key)
