"""HEIC (HEVC-compressed HEIF, as iPhones save photos) when our libvips cannot decode HEVC.

The libvips that pyvips-binary bundles (the same build as sharp's) has no HEVC decoder, for patent
reasons; libheif's `heif-convert` (Debian: libheif-examples, with libde265) has. It runs as a child
process bounded like pdftoppm (timeout, address-space limit), turning the HEIC into a JPEG that the
normal image path then thumbnails. Orientation (HEIF irot/imir) is applied by libheif while decoding.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from civic_runner.pipeline.errors import InputError

HEIF_CONVERT = "heif-convert"


def needs_external_decoder(libvips_error: str, loader: str = "", compression: str = "") -> bool:
    """Whether a failed decode should be retried with heif-convert: an HEVC-compressed HEIF (from the
    header: libvips reads it without the codec) that libvips could not decode, or libvips' own words for
    'this codec is not built in'. The header is the reliable signal: libvips' error text is one global
    buffer, and with several images rendering at once another thread may clear it first."""
    if loader.startswith("heifload") and compression.lower() == "hevc":
        return True
    text = libvips_error.lower()
    return "hevc" in text and ("not been built in" in text or "decoder plugin" in text or "unsupported" in text)


def command(src: str, dst: str, max_memory_mb: int, prlimit: str | None, tool: str = HEIF_CONVERT) -> list[str]:
    convert = [tool, "--quiet", "-q", "92", src, dst]
    if prlimit is None:
        return convert
    return [prlimit, f"--as={max_memory_mb * 1024 * 1024}", "--", *convert]


def available() -> bool:
    return shutil.which(HEIF_CONVERT) is not None


def to_jpeg(data: bytes, timeout: float, max_memory_mb: int) -> bytes:
    if not available():
        raise InputError(
            "The image is a HEIC photo compressed with HEVC, which this worker cannot decode "
            "(install libheif-examples for heif-convert)."
        )
    with tempfile.TemporaryDirectory(prefix="civic-heic-") as tmp:
        src, dst = Path(tmp) / "in.heic", Path(tmp) / "out.jpg"
        src.write_bytes(data)
        try:
            done = subprocess.run(
                command(str(src), str(dst), max_memory_mb, shutil.which("prlimit")),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise InputError(f"Decoding the HEIC photo took longer than {timeout:g} s, so it was stopped.") from exc
        # A file with several top-level images becomes out-1.jpg, out-2.jpg, ...: the first is the photo.
        outputs = sorted(Path(tmp).glob("out*.jpg"))
        if done.returncode != 0 or not outputs:
            last = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
            raise InputError(f"The HEIC photo could not be decoded ({last[-1] if last else 'no details'}).")
        return outputs[0].read_bytes()
