"""Rendering with the real libvips and poppler: sizes, orientation, padding, metadata, and every kind
of hostile input ending in a sentence a person understands (no servers needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import pyvips
from civic_runner.pipeline import imaging, pdf
from civic_runner.pipeline.config import Fit, ThumbnailSettings
from civic_runner.pipeline.errors import InputError
from civic_runner.pipeline.plan import expected_size

from devenv import corpus

pytestmark = pytest.mark.integration

SETTINGS = ThumbnailSettings()


def decode(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


def pixel(img: pyvips.Image, fx: float, fy: float) -> list[float]:
    return [round(v) for v in img.getpoint(int(img.width * fx), int(img.height * fy))]


@pytest.mark.parametrize("fit", list(Fit))
@pytest.mark.parametrize(("w", "h"), [(1200, 900), (600, 1000), (100, 60)])
def test_image_sizes_for_every_fit(fit: Fit, w: int, h: int) -> None:
    settings = ThumbnailSettings(fit=fit)
    out = {r.name: r for r in imaging.render_image(corpus.jpeg(w, h), settings)}
    assert set(out) == {"small", "medium", "large"}
    for name, box in zip(("small", "medium", "large"), settings.sizes, strict=True):
        r = out[name]
        img = decode(r.data)
        assert (img.width, img.height) == (r.width, r.height) == expected_size(w, h, box, fit, False)
        assert r.content_type == "image/jpeg" and r.ext == "jpg" and img.get("vips-loader") == "jpegload_buffer"
        assert img.bands == 3 and img.interpretation == "srgb"


def test_pad_is_white_and_centred() -> None:
    out = {r.name: decode(r.data) for r in imaging.render_image(corpus.jpeg(1600, 400), SETTINGS)}
    small = out["small"]
    assert pixel(small, 0.5, 0.02) == [255, 255, 255]  # above the 150x38 picture
    assert pixel(small, 0.5, 0.98) == [255, 255, 255]
    assert pixel(small, 0.5, 0.5) != [255, 255, 255]


def test_background_is_configurable() -> None:
    settings = ThumbnailSettings(background=(0, 0, 0))
    small = decode(next(r.data for r in imaging.render_image(corpus.jpeg(1600, 400), settings) if r.name == "small"))
    assert all(v < 8 for v in pixel(small, 0.5, 0.02))


@pytest.mark.parametrize("width", [400, 3200])  # 3200: through our own JPEG shrink-on-load
@pytest.mark.parametrize(("orientation", "red_at"), [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")])
def test_exif_orientation_applied_and_metadata_stripped(width: int, orientation: int, red_at: str) -> None:
    # Left half red, right half blue; 6 means "rotate 90 degrees clockwise to display": red ends on top.
    data = corpus.two_colour_jpeg(width, width // 2, orientation=orientation)
    for r in imaging.render_image(data, ThumbnailSettings(fit=Fit.INSIDE)):
        img = decode(r.data)
        portrait = red_at in ("top", "bottom")
        assert (img.height > img.width) is portrait, (r.name, img.width, img.height)
        points = {
            "top": (0.5, 0.25),
            "bottom": (0.5, 0.75),
            "left": (0.25, 0.5),
            "right": (0.75, 0.5),
        }
        opposite = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}[red_at]
        red, blue = pixel(img, *points[red_at]), pixel(img, *points[opposite])
        assert red[0] > 200 and red[2] < 50 and blue[2] > 200 and blue[0] < 50, (r.name, red, blue)
        assert not [f for f in img.get_fields() if f.startswith(("exif", "icc", "xmp", "iptc", "orientation"))]


def test_transparency_is_flattened_onto_white() -> None:
    small = decode(next(r.data for r in imaging.render_image(corpus.rgba_png(300, 300), SETTINGS)))
    assert small.bands == 3 and pixel(small, 0.5, 0.5) == [255, 255, 255]


def test_renamed_and_other_formats() -> None:
    base = corpus.photo(320, 240)
    for data in (
        bytes(base.pngsave_buffer()),
        bytes(base.webpsave_buffer()),
        bytes(base.tiffsave_buffer()),
        bytes(base.gifsave_buffer()),
        bytes(base.heifsave_buffer(compression="av1")),
        bytes(base.colourspace("b-w").pngsave_buffer()),
        bytes(base.cast("ushort").copy(interpretation="rgb16").__mul__(256).cast("ushort").pngsave_buffer()),
    ):
        out = imaging.render_image(data, SETTINGS)
        assert [(r.width, r.height) for r in out] == [(800, 800), (400, 400), (150, 150)]


def test_heic_photos_decode_with_or_without_hevc_in_libvips() -> None:
    # pyvips-binary's libvips has no HEVC decoder: heif-convert (libheif) takes over; Debian's has one.
    out = imaging.render_image(corpus.heic_hevc(640, 480), SETTINGS)
    assert [(r.width, r.height) for r in out] == [(800, 800), (400, 400), (150, 150)]
    assert 60 < decode(out[0].data).crop(200, 300, 400, 200).avg() < 200  # the photo, not a blank page


def test_cascade_and_per_size_agree_on_sizes() -> None:
    data = corpus.jpeg(2000, 1500)
    a = imaging.render_image(data, SETTINGS, cascade=True)
    b = imaging.render_image(data, SETTINGS, cascade=False)
    assert [(r.name, r.width, r.height) for r in a] == [(r.name, r.width, r.height) for r in b]
    # Same picture, resampled along two routes: close, not identical.
    diff = (decode(a[2].data).cast("float") - decode(b[2].data).cast("float")).abs().avg()
    assert diff < 6, diff


# -- hostile images -----------------------------------------------------------------------------------


def _dht_garbled() -> bytes:
    data = bytearray(corpus.jpeg(800, 600))
    at = data.find(b"\xff\xc4") + 5
    data[at : at + 40] = b"\x00\x13\x37\x42" * 10
    return bytes(data)


HOSTILE_IMAGES = {
    "truncated jpeg": (lambda: corpus.truncated(corpus.jpeg(1200, 900)), "damaged, truncated"),
    "jpeg with a garbled huffman table": (_dht_garbled, "Huffman"),
    "truncated png": (lambda: corpus.truncated(corpus.screenshot_png(800, 600)), "damaged, truncated"),
    "png with bad checksums": (lambda: corpus.corrupted(corpus.screenshot_png(800, 600), 0.3, 256), "damaged"),
    "png bomb 100k x 100k": (lambda: corpus.png_bomb(), "10000 megapixels"),
    "jpeg claiming 60000 x 60000": (lambda: corpus.jpeg_with_dimensions(60000, 60000), "3600 megapixels"),
    # Blocked where libvips has the loader ("not accepted"), unknown where it has not (pyvips-binary): "|".
    "svg (untrusted loader)": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "|"),
    "ppm (loader not allowed)": (lambda: b"P6\n2 2\n255\n" + bytes(12), "|"),
    "random bytes": (lambda: os.urandom(4096), "could not be decoded"),
    "truncated heic": (lambda: corpus.truncated(corpus.heic_hevc(1200, 900)), "Unexpected end of file"),
}


@pytest.mark.parametrize("case", list(HOSTILE_IMAGES))
def test_hostile_images_fail_with_a_sentence(case: str) -> None:
    make, words = HOSTILE_IMAGES[case]
    data = make()
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        imaging.render_image(data, SETTINGS)
    message = str(info.value)
    if words == "|":
        assert "not accepted" in message or "not in a known format" in message, message
    else:
        assert words in message, message
    assert time.perf_counter() - started < 2  # refused from the header, not after decoding


def test_huge_but_allowed_image_renders_within_limits() -> None:
    # 9000 x 9000 flat PNG (81 MP, ~250 KB): under the 100 MP limit, decoded by streaming.
    out = imaging.render_image(corpus.flat_png(9000, 9000), SETTINGS)
    assert [(r.width, r.height) for r in out] == [(800, 800), (400, 400), (150, 150)]
    with pytest.raises(InputError, match="more than the 50 megapixels"):
        imaging.render_image(corpus.flat_png(9000, 9000), ThumbnailSettings(max_megapixels=50))


# -- PDFs -------------------------------------------------------------------------------------------


def render_pdf(data: bytes, settings: ThumbnailSettings = SETTINGS) -> list[imaging.Rendered]:
    page = pdf.render_first_page(data, max(settings.sizes), settings.render_timeout, settings.render_max_memory_mb)
    return imaging.render_pdf_page(page, settings)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((612, 792), [(619, 800), (309, 400), (116, 150)]),  # US letter, portrait
        ((842, 595), [(800, 565), (400, 283), (150, 106)]),  # A4 landscape
        ((14400, 14400), [(800, 800), (400, 400), (150, 150)]),  # 200 inches square: still 800 px
    ],
)
def test_pdf_first_page_proportional_png(size: tuple[float, float], expected: list[tuple[int, int]]) -> None:
    out = render_pdf(corpus.pdf(3, size=size))
    got = [(r.width, r.height) for r in out]
    assert all(abs(a - c) <= 1 and abs(b - d) <= 1 for (a, b), (c, d) in zip(got, expected, strict=True)), got
    for r in out:
        img = decode(r.data)
        assert r.content_type == "image/png" and r.ext == "png" and img.get("vips-loader") == "pngload_buffer"
    large = decode(out[0].data)
    assert pixel(large, 0.5, 0.02) == [255, 255, 255]  # page margin
    assert pixel(large, 0.2, 0.75)[1] > 100 and pixel(large, 0.2, 0.75)[0] < 50  # the green box


def test_encrypted_pdf_without_user_password_renders() -> None:
    # Encrypted with an owner password only, as permission-restricted PDFs are: readable.
    assert len(render_pdf(corpus.pdf(1, user_password=""))) == 3


HOSTILE_PDFS = {
    "password-protected": (lambda: corpus.pdf(1, user_password="secret"), "password-protected"),
    "corrupt": (corpus.corrupt_pdf, "damaged or is not a real PDF"),
    "truncated": (lambda: corpus.truncated(corpus.pdf(2), 0.6), "damaged or is not a real PDF"),
    "not a pdf at all": (lambda: b"%PDF-" + os.urandom(64), "damaged or is not a real PDF"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PDFS))
def test_hostile_pdfs_fail_with_a_sentence(case: str) -> None:
    make, words = HOSTILE_PDFS[case]
    with pytest.raises(InputError) as info:
        render_pdf(make())
    assert words in str(info.value), str(info.value)


def _children_named(name: str) -> list[int]:
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split()
        except OSError:
            continue
        if fields[3] == me and name in fields[1]:
            found.append(int(fields[0]))
    return found


def test_pdf_timeout_kills_the_renderer() -> None:
    slow = corpus.slow_pdf(400_000)  # ~1.3 s to render on this machine's cores
    started = time.perf_counter()
    with pytest.raises(InputError, match=r"took longer than 0\.3 s"):
        pdf.render_first_page(slow, 800, 0.3, 1024)
    assert time.perf_counter() - started < 1.0
    assert _children_named("pdftoppm") == [] and _children_named("prlimit") == []
