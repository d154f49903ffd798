"""What a file is: by its declared MIME type, and by its first bytes. Pure functions.

The declared type chooses whether we try at all (as Civic OS's worker does); the bytes choose how,
so a PDF that claims to be a PNG is refused instead of being handed to an image loader, and a PNG
that claims to be a JPEG (common with renamed files) is still thumbnailed.
"""

from __future__ import annotations

from enum import StrEnum

PDF_TYPES = frozenset({"application/pdf", "application/x-pdf", "pdf"})


class Kind(StrEnum):
    IMAGE = "image"
    PDF = "pdf"
    OTHER = "other"


# Image formats whose libvips loaders we allow (see imaging.ALLOWED_LOADERS).
IMAGE_FORMATS = frozenset({"jpeg", "png", "gif", "webp", "tiff", "heif", "avif"})

_NAMES = {
    "jpeg": "a JPEG image",
    "png": "a PNG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "tiff": "a TIFF image",
    "heif": "a HEIF/HEIC image",
    "avif": "an AVIF image",
    "pdf": "a PDF document",
    "svg": "an SVG drawing",
    "bmp": "a BMP image",
    "ico": "an icon file",
    "html": "an HTML page",
    "xml": "an XML document",
    "zip": "a ZIP archive (or an Office document)",
    "gzip": "a gzip archive",
    "jxl": "a JPEG XL image",
    "jp2": "a JPEG 2000 image",
    "psd": "a Photoshop document",
    "mp4": "a video",
    "text": "plain text",
}


def base_type(file_type: str) -> str:
    """'Image/PNG; charset=x ' -> 'image/png'."""
    return file_type.split(";", 1)[0].strip().lower()


def is_pdf_type(file_type: str) -> bool:
    """Civic OS's isPDFType: application/pdf, application/x-pdf or pdf, any case, trimmed."""
    return base_type(file_type) in PDF_TYPES


def kind_of_type(file_type: str) -> Kind:
    if is_pdf_type(file_type):
        return Kind.PDF
    if base_type(file_type).startswith("image/"):
        return Kind.IMAGE
    return Kind.OTHER


def sniff(data: bytes) -> str | None:
    """The format the bytes are in, from their signature; None if not recognised."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "heif"
        return "mp4"
    if b"%PDF-" in data[:1024]:  # PDF readers accept junk before the header
        return "pdf"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ico"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"8BPS":
        return "psd"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jxl"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return "jp2"
    text = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if text.startswith(b"<?xml"):
        return "xml"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return None


def describe(fmt: str | None) -> str:
    return _NAMES.get(fmt or "", "data of an unknown format")


def choose_renderer(file_type: str, data: bytes) -> tuple[Kind, str | None, str | None]:
    """(how to render, sniffed format, None) or (Kind.OTHER, sniffed, a sentence for thumbnail_error)."""
    declared = kind_of_type(file_type)
    if not data:
        return Kind.OTHER, None, "The file is empty (0 bytes), so there is nothing to make a thumbnail from."
    fmt = sniff(data)
    shown = base_type(file_type) or "(empty)"
    if declared is Kind.PDF:
        if fmt == "pdf":
            return Kind.PDF, fmt, None
        return Kind.OTHER, fmt, f"The file is declared as a PDF ({shown}) but its content is {describe(fmt)}."
    if declared is Kind.IMAGE:
        if fmt in IMAGE_FORMATS:
            return Kind.IMAGE, fmt, None
        if fmt == "svg":
            return Kind.OTHER, fmt, "SVG drawings are not thumbnailed (their renderer is not safe for untrusted files)."
        if fmt in ("bmp", "ico", "jxl", "jp2", "psd"):
            return (
                Kind.OTHER,
                fmt,
                f"The file is {describe(fmt)}; thumbnails are made for JPEG, PNG, GIF, WebP, TIFF, HEIC "
                "and AVIF images.",
            )
        return Kind.OTHER, fmt, f"The file is declared as an image ({shown}) but its content is {describe(fmt)}."
    return Kind.OTHER, fmt, f"Thumbnails are made only for images and PDFs; this file's type is {shown}."
