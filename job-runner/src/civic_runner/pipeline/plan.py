"""Sizing decisions for thumbnails: pure functions, table-tested.

libvips does the resampling; these decide the boxes, the canvases and what is too big to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from civic_runner.pipeline.config import SIZE_NAMES, Fit, ThumbnailSettings
from civic_runner.pipeline.errors import human_size


@dataclass(frozen=True)
class Target:
    name: str  # small | medium | large (the s3_thumbnail_*_key column)
    box: int  # the square the thumbnail fits in (or covers, with crop)
    quality: int  # JPEG quality (PNG output ignores it)


def targets(settings: ThumbnailSettings) -> list[Target]:
    """Largest first: the cascade renders each size from the one before it."""
    out = [Target(n, b, q) for n, b, q in zip(SIZE_NAMES, settings.sizes, settings.qualities, strict=True)]
    return sorted(out, key=lambda t: -t.box)


def pixel_problem(width: int, height: int, max_pixels: int) -> str | None:
    """A sentence if the image is too large to decode safely (checked from the header alone)."""
    if width <= 0 or height <= 0:
        return f"The image header gives impossible dimensions ({width}x{height})."
    pixels = width * height
    if pixels > max_pixels:
        return (
            f"The image is {width}x{height} pixels ({pixels / 1e6:.0f} megapixels), more than the "
            f"{max_pixels / 1e6:g} megapixels allowed for thumbnails."
        )
    return None


def size_problem(size: int, max_bytes: int) -> str | None:
    if size > max_bytes:
        return f"The file is {human_size(size)}, more than the {human_size(max_bytes)} allowed for thumbnails."
    if size == 0:
        return "The file is empty (0 bytes), so there is nothing to make a thumbnail from."
    return None


def fit_inside(width: int, height: int, box: int, enlarge: bool) -> tuple[int, int]:
    """The scaled size that fits inside box x box keeping the proportions (libvips rounds the same way)."""
    scale = box / max(width, height)
    if scale >= 1 and not enlarge:
        return width, height
    if width >= height:
        return box, _half_up(height * scale)
    return _half_up(width * scale), box


def _half_up(x: float) -> int:
    """libvips rounds halves up (112.5 -> 113), Python's round() to even (-> 112)."""
    return max(1, math.floor(x + 0.5))


def fit_cover(width: int, height: int, box: int, enlarge: bool) -> tuple[int, int]:
    """The size after cover-and-centre-crop to box x box (smaller sides stay, without enlarge)."""
    scale = box / min(width, height)
    if scale >= 1 and not enlarge:
        return min(width, box), min(height, box)
    return box, box


def canvas(scaled: tuple[int, int], box: int, fit: Fit) -> tuple[int, int]:
    """The output size: the full square for pad and crop (a small image is padded), else the scaled size."""
    if fit is Fit.INSIDE:
        return scaled
    return box, box


def expected_size(width: int, height: int, box: int, fit: Fit, enlarge: bool) -> tuple[int, int]:
    scaled = fit_cover(width, height, box, enlarge) if fit is Fit.CROP else fit_inside(width, height, box, enlarge)
    return canvas(scaled, box, fit)


def jpeg_shrink(width: int, height: int, box: int, fit: Fit) -> int:
    """JPEG shrink-on-load factor (1, 2, 4 or 8: libjpeg's DCT scaling) that still leaves at least
    `box` pixels on the side that decides the fit. libvips' thumbnail keeps another factor of two in
    reserve for sharpness; sharp does not (fastShrinkOnLoad), and neither do we: for 800 px from a
    12 MP photo that is 1000x750 decoded instead of 2000x1500, a quarter of the work."""
    side = min(width, height) if fit is Fit.CROP else max(width, height)
    ratio = side / box
    for factor in (8, 4, 2):
        if ratio >= factor:
            return factor
    return 1


def pdf_render_box(settings: ThumbnailSettings) -> int:
    """The long side pdftoppm renders the first page at: the largest thumbnail, nothing more
    (Civic OS renders at 300 dpi: 2550x3300 for a letter page, 10x the pixels it needs)."""
    return max(settings.sizes)
