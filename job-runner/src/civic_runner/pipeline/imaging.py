"""Image thumbnails with libvips (pyvips), hardened for untrusted files.

Only the loaders we need are enabled (everything libvips marks untrusted, and every other loader,
is blocked process-wide); the pixel count is checked from the header before any pixel is decoded;
the operation cache is off so one upload's buffers are not kept alive by the next.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

import pyvips

from civic_runner.pipeline import heic
from civic_runner.pipeline.config import Fit, ThumbnailSettings
from civic_runner.pipeline.errors import InputError
from civic_runner.pipeline.plan import Target, canvas, jpeg_shrink, pixel_problem, targets

log = logging.getLogger("civic_runner.pipeline.imaging")

# libvips class names (names differ between versions: unknown names are ignored by libvips).
ALLOWED_LOADERS = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",  # libpng or libspng, by build
    "VipsForeignLoadWebp",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadGif",
    "VipsForeignLoadTiff",
    "VipsForeignLoadHeif",  # HEIC and AVIF
)
MIN_VIPS = (8, 13)  # block_untrusted_set / operation_block_set
_CODE = re.compile(r"\(\d+(\.\d+)*\)")  # libheif's error codes, e.g. "(2.100)"

_hardened = False
_lock = threading.Lock()


def vips_version() -> tuple[int, int, int]:
    return pyvips.version(0), pyvips.version(1), pyvips.version(2)


def harden(threads: int = 1) -> None:
    """Once per process, before the first untrusted byte is parsed (and `threads` libvips threads per
    image: the first caller's setting holds for the process)."""
    global _hardened
    with _lock:
        if _hardened:
            return
        if vips_version()[:2] < MIN_VIPS:
            raise RuntimeError(
                f"libvips {'.'.join(map(str, vips_version()))} is too old: "
                "8.13 or later is needed to block unsafe loaders"
            )
        pyvips.cache_set_max(0)
        pyvips.concurrency_set(threads)
        pyvips.block_untrusted_set(True)
        pyvips.operation_block_set("VipsForeignLoad", True)
        for name in ALLOWED_LOADERS:
            pyvips.operation_block_set(name, False)
        _hardened = True
        log.info(
            "libvips hardened",
            extra={"vips": ".".join(map(str, vips_version())), "loaders": list(ALLOWED_LOADERS), "threads": threads},
        )


@dataclass(frozen=True)
class Rendered:
    name: str
    data: bytes
    width: int
    height: int
    content_type: str
    ext: str


def _reason(exc: pyvips.Error) -> str:
    """libvips' last line ('VipsJpeg: Premature end of input file'), without the call chain and
    without libheif's bare error codes ('(2.100)') that follow its message."""
    lines = [
        ln.strip()
        for ln in str(exc).splitlines()
        if ln.strip() and not ln.strip().startswith("unable to call") and not _CODE.fullmatch(ln.strip())
    ]
    return (lines[-1] if lines else str(exc).strip())[:300]


def undecodable(exc: pyvips.Error) -> InputError:
    detail = _reason(exc)
    if "blocked" in detail:
        return InputError(f"The image's format is not accepted for thumbnails ({detail}).")
    return InputError(f"The image could not be decoded: it is damaged, truncated or not really an image ({detail}).")


def _source(data: bytes) -> pyvips.Source:
    return pyvips.Source.new_from_memory(data)


def open_header(data: bytes, settings: ThumbnailSettings) -> pyvips.Image:
    """Parse only the header (lazy open) and refuse anything whose pixel count is over the limit."""
    harden(settings.vips_threads)
    try:
        # From a Source over the bytes, not new_from_buffer: that copies the whole upload (16 MB for a
        # 50 MP photo) each time it is opened (measured: -7 % CPU, -80 MB peak RSS on 50 MP JPEGs).
        head = pyvips.Image.new_from_source(_source(data), "", access="sequential", fail_on=settings.fail_on.value)
    except pyvips.Error as exc:
        raise undecodable(exc) from exc
    problem = pixel_problem(head.width, head.height, settings.max_pixels)
    if problem:
        raise InputError(problem)
    return head


def _rgb_on(image: pyvips.Image, background: tuple[int, int, int]) -> pyvips.Image:
    """8-bit sRGB, three bands, transparency flattened onto the background."""
    if image.interpretation not in ("srgb",) or image.format != "uchar":
        image = image.colourspace("srgb")  # CMYK, 16-bit, grey, LAB ... -> 8-bit sRGB
    if image.hasalpha():
        image = image.flatten(background=list(background))
    if image.bands > 3:
        image = image.extract_band(0, n=3)
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def _finish(image: pyvips.Image, target: Target, settings: ThumbnailSettings) -> pyvips.Image:
    image = _rgb_on(image, settings.background)
    w, h = canvas((image.width, image.height), target.box, settings.fit)
    if (w, h) != (image.width, image.height):
        image = image.gravity("centre", w, h, extend="background", background=list(settings.background))
    return image


def _thumb_options(target: Target, settings: ThumbnailSettings) -> dict[str, object]:
    opts: dict[str, object] = {"height": target.box, "size": "both" if settings.enlarge else "down"}
    if settings.fit is Fit.CROP:
        opts["crop"] = "centre"
    return opts


def _encode_jpeg(image: pyvips.Image, target: Target) -> bytes:
    # 4:2:0 chroma always (libvips' default turns it off at Q >= 90): a third smaller, faster, and
    # what sharp and browsers' own thumbnails do. Optimized Huffman tables as sharp's default: files
    # 15-25 % smaller, byte-identical to sharp's where the pixels are, for ~2 % more CPU.
    return bytes(
        image.jpegsave_buffer(Q=target.quality, strip=True, optimize_coding=True, interlace=False, subsample_mode="on")
    )


def render_image(data: bytes, settings: ThumbnailSettings, *, cascade: bool = True) -> list[Rendered]:
    """Three JPEG thumbnails, EXIF orientation applied, metadata stripped.

    cascade=True: one shrink-on-load decode to the largest size, then each smaller size from that
    (measured in bench/thumbnails.py: faster than decoding per size, most of all for PNG, which has
    no shrink-on-load). cascade=False: thumbnail_buffer once per size.
    """
    try:
        return _render_image(data, settings, cascade)
    except _NeedsHeifConvert:
        jpeg = heic.to_jpeg(data, settings.render_timeout, settings.render_max_memory_mb)
        return _render_image(jpeg, settings, cascade)


class _NeedsHeifConvert(Exception):
    pass


def _first_thumbnail(data: bytes, head: pyvips.Image, target: Target, settings: ThumbnailSettings) -> pyvips.Image:
    opts = _thumb_options(target, settings)
    if head.get_typeof("icc-profile-data") or head.interpretation == "cmyk":
        # Colour-manage what carries a profile (a phone's Display P3, CMYK) into sRGB before the profile
        # is stripped, as sharp does; perceptual intent as sharp's. Only then: an untagged 12 MP photo
        # would cost 105 instead of 58 CPU ms with a transform it does not need.
        opts.update(export_profile="srgb", intent="perceptual")
    load_opts = f"fail_on={settings.fail_on.value}"  # thumbnail_buffer's own fail_on is ignored by libvips 8.14
    shrink = jpeg_shrink(head.width, head.height, target.box, settings.fit)
    if str(head.get("vips-loader")).startswith("jpegload") and shrink > 1:
        # Our own shrink-on-load (see plan.jpeg_shrink); thumbnail_image still applies EXIF orientation.
        image = pyvips.Image.new_from_source(
            _source(data), "", shrink=shrink, access="sequential", fail_on=settings.fail_on.value
        )
        return image.thumbnail_image(target.box, **opts)
    return pyvips.Image.thumbnail_buffer(data, target.box, option_string=load_opts, **opts)


def _render_image(data: bytes, settings: ThumbnailSettings, cascade: bool) -> list[Rendered]:
    head = open_header(data, settings)
    out: list[Rendered] = []
    largest: pyvips.Image | None = None
    try:
        for target in targets(settings):
            opts = _thumb_options(target, settings)
            if largest is None or not cascade:
                thumb = _first_thumbnail(data, head, target, settings)
                if cascade:
                    # Decoded once into memory (at most the largest box squared): every smaller size is
                    # made from it, not from the file (and not from the size before, as sharp's cascade
                    # does too: outputs byte-identical to sharp's for opaque sRGB inputs).
                    thumb = thumb.copy_memory()
                    largest = thumb
            else:
                thumb = largest.thumbnail_image(target.box, **opts)
            final = _finish(thumb, target, settings)
            out.append(
                Rendered(target.name, _encode_jpeg(final, target), final.width, final.height, "image/jpeg", "jpg")
            )
    except pyvips.Error as exc:
        if heic.needs_external_decoder(str(exc), _field(head, "vips-loader"), _field(head, "heif-compression")):
            raise _NeedsHeifConvert() from exc
        raise undecodable(exc) from exc
    return out


def _field(image: pyvips.Image, name: str) -> str:
    return str(image.get(name)) if image.get_typeof(name) else ""


def render_pdf_page(png: bytes, settings: ThumbnailSettings) -> list[Rendered]:
    """Proportional PNG thumbnails (as Civic OS makes for PDFs) from the rendered first page."""
    harden(settings.vips_threads)
    out: list[Rendered] = []
    try:
        page = pyvips.Image.new_from_buffer(png, "", access="sequential").copy_memory()
        for target in targets(settings):
            thumb = page.thumbnail_image(target.box, height=target.box, size="down")
            thumb = _rgb_on(thumb, settings.background)
            out.append(
                Rendered(
                    target.name,
                    bytes(thumb.pngsave_buffer(compression=6, strip=True)),
                    thumb.width,
                    thumb.height,
                    "image/png",
                    "png",
                )
            )
    except pyvips.Error as exc:
        raise InputError(f"The rendered PDF page could not be read ({_reason(exc)}).") from exc
    return out
