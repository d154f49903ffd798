"""Inputs for the pipeline tests and benchmarks, generated here (nothing is downloaded).

Photos and screenshots are drawn with libvips; PDFs are written byte by byte (including RC4
encryption, so an encrypted PDF is a real one, not a file that merely claims to be); hostile files
(bombs, truncations, lies about the type) are crafted from those.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from dataclasses import dataclass

import pyvips

# -- images -----------------------------------------------------------------------------------------


def photo(width: int, height: int, *, seed: int = 1, noise: float = 18) -> pyvips.Image:
    """Something with a photo's statistics: smooth gradients plus sensor-like noise, so JPEG sizes
    and decode costs are realistic (a flat image would make every number look better than it is)."""
    x = pyvips.Image.xyz(width, height)
    gx = x[0] * (255.0 / max(width - 1, 1))
    gy = x[1] * (255.0 / max(height - 1, 1))
    r = gx
    g = gy
    b = (gx + gy) * 0.5
    base = r.bandjoin([g, b])
    grain = pyvips.Image.gaussnoise(width, height, sigma=noise, mean=0, seed=seed).bandjoin(
        [
            pyvips.Image.gaussnoise(width, height, sigma=noise, mean=0, seed=seed + 1),
            pyvips.Image.gaussnoise(width, height, sigma=noise, mean=0, seed=seed + 2),
        ]
    )
    out = (base + grain).cast("uchar")
    return out.copy(interpretation="srgb")


def jpeg(
    width: int, height: int, *, quality: int = 90, seed: int = 1, orientation: int | None = None, noise: float = 18
) -> bytes:
    img = photo(width, height, seed=seed, noise=noise)
    if orientation is not None:
        img = img.copy()
        img.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(img.jpegsave_buffer(Q=quality))


def solid(width: int, height: int, colour: list[int]) -> pyvips.Image:
    return pyvips.Image.black(width, height).new_from_image(colour).cast("uchar").copy(interpretation="srgb")


def two_colour_jpeg(width: int, height: int, orientation: int) -> bytes:
    """Left half red, right half blue, with an EXIF orientation: after auto-rotation by 90 degrees
    clockwise (orientation 6) red must be on top."""
    left = solid(width // 2, height, [255, 0, 0])
    right = solid(width - width // 2, height, [0, 0, 255])
    img = left.join(right, "horizontal").copy(interpretation="srgb")
    img.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return bytes(img.jpegsave_buffer(Q=95))


def screenshot_png(width: int, height: int, *, photo_inset: bool = False) -> bytes:
    """A UI-like screenshot: flat panels, thin rules and 'text' stripes; compresses like the real thing.
    With photo_inset a quarter of it is a photo (as in a screenshot of a web page), which is what
    makes real screenshots megabytes rather than kilobytes."""
    x = pyvips.Image.xyz(width, height)
    panel = ((x[0] / 240).cast("int") % 3) * 40 + 170
    rows = ((x[1] % 24) < 3).ifthenelse(60, panel)
    text = (((x[0] % 9) < 5) & ((x[1] % 24) > 8) & ((x[1] % 24) < 18) & ((x[0] % 240) > 20)).ifthenelse(30, rows)
    img = text.bandjoin([text, (text + 20)]).cast("uchar").copy(interpretation="srgb")
    if photo_inset:
        img = img.insert(photo(width // 2, height // 2, noise=6), width // 4, height // 4)
    return bytes(img.pngsave_buffer(compression=6))


def rgba_png(width: int, height: int) -> bytes:
    """Half-transparent: padding and flattening must give white, not black."""
    rgb = solid(width, height, [0, 128, 0])
    alpha = pyvips.Image.black(width, height).cast("uchar")
    return bytes(rgb.bandjoin(alpha).copy(interpretation="srgb").pngsave_buffer())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000, rows: int = 16) -> bytes:
    """A PNG whose header promises width x height RGB pixels (10^10 by default: 30 GB decoded) but
    which carries only a few rows of zeros: cheap to make, fatal to a decoder that trusts it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = (b"\x00" + bytes(width * 3)) * rows
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=4)
def flat_png(width: int, height: int) -> bytes:
    """A real, complete, highly compressible PNG (a 'bomb' that is within the limits)."""
    img = solid(width, height, [200, 200, 200])
    return bytes(img.pngsave_buffer(compression=9))


def jpeg_with_dimensions(width: int, height: int) -> bytes:
    """A small valid JPEG whose SOF header is rewritten to claim width x height (up to 65535)."""
    data = bytearray(jpeg(64, 48, quality=80))
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            struct.pack_into(">HH", data, i + 5, height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF marker")


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def corrupted(data: bytes, start: float = 0.3, length: int = 4096) -> bytes:
    """Garbage over the middle of the file (the header survives, the entropy-coded data does not)."""
    at = int(len(data) * start)
    junk = hashlib.sha256(b"junk").digest() * (length // 32 + 1)
    return data[:at] + junk[:length] + data[at + length :]


# -- PDFs -------------------------------------------------------------------------------------------

_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) & 0xFF])
    return bytes(out)


@dataclass(frozen=True)
class _Rc4Security:
    """PDF standard security handler, revision 2 (40-bit RC4): PDF 1.7 section 7.6.3, algorithms 2-4."""

    user_password: bytes
    owner_password: bytes
    file_id: bytes = hashlib.md5(b"civic-corpus").digest()
    permissions: int = -4

    def _padded(self, pw: bytes) -> bytes:
        return (pw + _PAD)[:32]

    @property
    def o_value(self) -> bytes:
        key = hashlib.md5(self._padded(self.owner_password or self.user_password)).digest()[:5]
        return _rc4(key, self._padded(self.user_password))

    @property
    def key(self) -> bytes:
        md5 = hashlib.md5()
        md5.update(self._padded(self.user_password))
        md5.update(self.o_value)
        md5.update(struct.pack("<i", self.permissions))
        md5.update(self.file_id)
        return md5.digest()[:5]

    @property
    def u_value(self) -> bytes:
        return _rc4(self.key, _PAD)

    def encrypt(self, obj_num: int, data: bytes) -> bytes:
        k = hashlib.md5(self.key + struct.pack("<I", obj_num)[:3] + b"\x00\x00").digest()[:10]
        return _rc4(k, data)


def pdf(
    pages: int = 1,
    *,
    size: tuple[float, float] = (612, 792),
    user_password: str | None = None,
    owner_password: str = "owner",
) -> bytes:
    """A PDF with `pages` pages of `size` points, each with coloured boxes and a line of Helvetica.
    With `user_password` it is encrypted (RC4-40) and cannot be opened without it; with
    user_password="" it is encrypted but opens without a password, as permission-restricted PDFs do."""
    w, h = size
    sec = None if user_password is None else _Rc4Security(user_password.encode(), owner_password.encode())
    objs: dict[int, bytes] = {}
    n_fixed = 3  # catalog, pages, font
    page_ids = [n_fixed + 1 + 2 * i for i in range(pages)]
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    kids = " ".join(f"{p} 0 R" for p in page_ids).encode()
    objs[2] = b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(pages).encode() + b" >>"
    objs[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    for i, pid in enumerate(page_ids):
        cid = pid + 1
        content = (
            f"1 0 0 RG 0.9 0.9 1 rg {w * 0.1:.1f} {h * 0.5:.1f} {w * 0.8:.1f} {h * 0.4:.1f} re B\n"
            f"0 0.5 0 rg {w * 0.1:.1f} {h * 0.1:.1f} {w * 0.3:.1f} {h * 0.3:.1f} re f\n"
            f"BT /F1 {max(w / 20, 6):.1f} Tf {w * 0.1:.1f} {h * 0.45:.1f} Td (Civic OS page {i + 1}) Tj ET\n"
        ).encode()
        stream = zlib.compress(content)
        if sec is not None:
            stream = sec.encrypt(cid, stream)
        objs[pid] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:g} {h:g}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {cid} 0 R >>"
        ).encode()
        objs[cid] = f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream"
    encrypt_ref = b""
    if sec is not None:
        eid = max(objs) + 1
        objs[eid] = (
            b"<< /Filter /Standard /V 1 /R 2 /Length 40 /P "
            + str(sec.permissions).encode()
            + b" /O <"
            + sec.o_value.hex().encode()
            + b"> /U <"
            + sec.u_value.hex().encode()
            + b"> >>"
        )
        encrypt_ref = f" /Encrypt {eid} 0 R /ID [<{sec.file_id.hex()}> <{sec.file_id.hex()}>]".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n".encode() + objs[num] + b"\nendobj\n"
    xref_at = len(out)
    count = max(objs) + 1
    out += f"xref\n0 {count}\n0000000000 65535 f \n".encode()
    for num in range(1, count):
        out += f"{offsets[num]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {count} /Root 1 0 R".encode() + encrypt_ref + b" >>\n"
    out += f"startxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def corrupt_pdf() -> bytes:
    """Starts like a PDF, then nothing a parser can use."""
    return b"%PDF-1.7\n" + hashlib.sha512(b"not a pdf").digest() * 64 + b"\n%%EOF\n"


def slow_pdf(strokes: int = 400_000) -> bytes:
    """One page whose content stream draws `strokes` tiny stroked paths: a few hundred KB that keep a
    renderer busy for seconds (for the timeout)."""
    ops = b"".join(f"{i} {i} m {i + 300} {i + 2} l S\n".encode() for i in range(0, 400, 4)) * (strokes // 100)
    stream = zlib.compress(ops, 9)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode() + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for num, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{num} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def heic_hevc(width: int, height: int) -> bytes:
    """An HEVC-compressed HEIC, as iPhones save photos, made with libheif's heif-enc (Debian:
    libheif-examples; the libvips in pyvips-binary cannot encode or decode HEVC)."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    tool = shutil.which("heif-enc")
    if tool is None:
        raise RuntimeError("heif-enc not found: install libheif-examples (make deps)")
    with tempfile.TemporaryDirectory(prefix="civic-corpus-") as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / "out.heic"
        photo(width, height, noise=6).pngsave(str(src))
        subprocess.run([tool, "-q", "60", "-o", str(dst), str(src)], check=True, capture_output=True, timeout=120)
        return dst.read_bytes()
