"""Output parity with sharp: are our thumbnails the ones sharp makes from the same files?

    python -m bench.parity [--cases NAME,...] [--json out.json] [--no-ideal]

For each corpus class (drawn by devenv/corpus.py, or here from its pieces; nothing is
downloaded) ours are made by `civic_runner.pipeline.thumbnail.render` with the default
ThumbnailSettings (what the worker uploads) and sharp's by bench/sharp/thumbs.js in its output mode,
in both of its variants: `cascade` (decode once to 800, the smaller sizes from those pixels, as ours
does) and `clone` (sharp as it is normally used: one pipeline per size). Per size and variant:

- dims: the JPEGs' sizes are equal;
- padding: the content box (rows and columns whose mean luma differs from the white padding by more
  than PAD_THRESHOLD) is the same in both, and where it should be (fit inside, halves rounded up,
  offsets (box - content) // 2, which is how libvips' gravity and sharp's embed both centre);
- orientation: of the 8 EXIF transforms applied by hand to the stored pixels (plain rot/flip, not
  libvips' autorot), the one closest to the thumbnail is the one the file's tag asks for;
- pixels: max absolute difference per channel (R, G, B) and PSNR over the whole image, both JPEGs
  decoded to 8-bit sRGB (a one-band grey JPEG would be expanded to three bands);
- "ideal": PSNR of each against a reference made without shortcuts (full decode, colour-managed,
  flattened, one Lanczos3 pass from full size with no pre-shrink, padded, not JPEG-encoded; the
  JPEG encoding alone keeps every peer some dB below it): which of two different
  outputs is closer to the best possible thumbnail (not for CMYK, where the rendering intent is a
  choice, not an error);
- causes: the known differences between the two pipelines that apply to that row (each one checked
  by reproducing sharp's output exactly with pyvips; see bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "job-runner" / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import pyvips  # noqa: E402
from civic_runner.pipeline.config import SIZE_NAMES, ThumbnailSettings  # noqa: E402
from civic_runner.pipeline.plan import jpeg_shrink  # noqa: E402
from civic_runner.pipeline.thumbnail import render  # noqa: E402

from devenv import corpus  # noqa: E402

CORPUS = ROOT / "bench" / "out" / "corpus-parity"
OUT = ROOT / "bench" / "out" / "parity"
SHARP_DIR = ROOT / "bench" / "sharp"
VARIANTS = ("cascade", "clone")
PAD_THRESHOLD = 16.0  # mean |luma - padding luma| of a row or column that holds content (JPEG ringing stays below)
WHITE = (255, 255, 255)


# -- corpus ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    make: Callable[[], bytes]
    file_type: str
    orientation: int = 1  # the EXIF tag the file carries (1: none, or upright)

    @property
    def ext(self) -> str:
        return "png" if self.file_type == "image/png" else "jpg"


def screenshot_alpha(width: int, height: int) -> bytes:
    """A screenshot whose alpha fades from opaque (left) to a quarter (right), with a fully
    transparent window in the middle whose RGB is black (flattening must still give white there)."""
    rgb = pyvips.Image.new_from_buffer(corpus.screenshot_png(width, height), "")
    x = pyvips.Image.xyz(width, height)
    fade = 255 - x[0] * (191.0 / max(width - 1, 1))
    inside = (x[0] > width // 3) & (x[0] < 2 * width // 3) & (x[1] > height // 3) & (x[1] < 2 * height // 3)
    alpha = inside.ifthenelse(0, fade)
    rgb = inside.ifthenelse(pyvips.Image.black(width, height, bands=3), rgb)
    img = rgb.bandjoin(alpha).cast("uchar").copy(interpretation="srgb")
    return bytes(img.pngsave_buffer(compression=6))


def grey_jpeg(width: int, height: int) -> bytes:
    return bytes(corpus.photo(width, height, seed=7).colourspace("b-w").jpegsave_buffer(Q=90))


def cmyk_jpeg(width: int, height: int, *, profile: bool) -> bytes:
    """corpus.photo through libvips' own CMYK conversion (its built-in CMYK profile), saved as an
    Adobe CMYK JPEG, with or without the profile embedded (corpus.py has no CMYK maker)."""
    img = corpus.photo(width, height, seed=8).colourspace("cmyk")
    if not profile:
        img = img.copy()
        img.remove("icc-profile-data")
    return bytes(img.jpegsave_buffer(Q=90))


def p3_jpeg(width: int, height: int) -> bytes:
    """corpus.photo converted to Display P3, the profile embedded, as phones save photos."""
    img = corpus.photo(width, height, seed=9).icc_transform("p3", input_profile="srgb")
    return bytes(img.jpegsave_buffer(Q=90))


def orientation_jpeg(tag: int, width: int = 1200, height: int = 800) -> bytes:
    return corpus.jpeg(width, height, seed=20 + tag, orientation=tag)


def cases() -> list[Case]:
    jpg, png = "image/jpeg", "image/png"
    out = [
        Case("photo-12mp", "12 MP JPEG photo 4000x3000", lambda: corpus.jpeg(4000, 3000, seed=10, noise=6), jpg),
        Case("photo-50mp", "50 MP JPEG photo 8660x5773", lambda: corpus.jpeg(8660, 5773, seed=50, noise=6), jpg),
        Case(
            "screenshot-png",
            "PNG screenshot 3840x2160 with a photo inset",
            lambda: corpus.screenshot_png(3840, 2160, photo_inset=True),
            png,
        ),
        Case(
            "screenshot-alpha",
            "PNG screenshot 2560x1600, alpha 255..64, a transparent window",
            lambda: screenshot_alpha(2560, 1600),
            png,
        ),
        Case("png-50mp", "50 MP PNG screenshot 8660x5773", lambda: corpus.screenshot_png(8660, 5773), png),
        Case(
            "png-transparent",
            "PNG 1200x900 fully transparent (corpus.rgba_png)",
            lambda: corpus.rgba_png(1200, 900),
            png,
        ),
        Case("portrait", "JPEG portrait 3000x4000", lambda: corpus.jpeg(3000, 4000, seed=11), jpg),
        Case("wide-4000x300", "JPEG 4000x300", lambda: corpus.jpeg(4000, 300, seed=12), jpg),
        Case("tall-300x4000", "JPEG 300x4000", lambda: corpus.jpeg(300, 4000, seed=13), jpg),
        Case(
            "exact-1600x1200",
            "JPEG 1600x1200 (exactly twice the large box)",
            lambda: corpus.jpeg(1600, 1200, seed=14),
            jpg,
        ),
        Case(
            "small-300x200",
            "JPEG 300x200 (padded, not enlarged, in 400 and 800)",
            lambda: corpus.jpeg(300, 200, seed=15),
            jpg,
        ),
        Case("grey", "grey JPEG 2000x1500 (one band)", lambda: grey_jpeg(2000, 1500), jpg),
        Case("cmyk", "CMYK JPEG 2000x1500, CMYK profile embedded", lambda: cmyk_jpeg(2000, 1500, profile=True), jpg),
        Case("cmyk-noprofile", "CMYK JPEG 2000x1500, no profile", lambda: cmyk_jpeg(2000, 1500, profile=False), jpg),
        Case("p3", "JPEG 2000x1500 in Display P3, profile embedded", lambda: p3_jpeg(2000, 1500), jpg),
    ]
    for tag in range(1, 9):
        out.append(
            Case(
                f"orient-{tag}",
                f"JPEG 1200x800 stored, EXIF orientation {tag}",
                functools.partial(orientation_jpeg, tag),
                jpg,
                tag,
            )
        )
    return out


def corpus_file(case: Case, folder: Path = CORPUS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.name}.{case.ext}"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(case.make())
        tmp.rename(path)
    return path


# -- the two peers -----------------------------------------------------------------------------------


def ours(case: Case, path: Path, settings: ThumbnailSettings, folder: Path) -> dict[int, Path]:
    """Our worker's render(); box size -> file."""
    box_of = dict(zip(SIZE_NAMES, settings.sizes, strict=True))
    _, rendered = render(case.file_type, path.read_bytes(), settings)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for r in rendered:
        dest = folder / f"{case.name}-{box_of[r.name]}.{r.ext}"
        dest.write_bytes(r.data)
        out[box_of[r.name]] = dest
    return out


def sharp_installed() -> bool:
    return (SHARP_DIR / "node_modules" / "sharp" / "package.json").exists()


def sharp(paths: list[Path], variant: str, settings: ThumbnailSettings, folder: Path) -> dict[tuple[str, int], Path]:
    """bench/sharp/thumbs.js in its output mode: (file stem, box) -> file."""
    if not sharp_installed():
        raise RuntimeError("sharp is not installed in bench/sharp: run `make sharp`")
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "files": [str(p) for p in paths],
        "variant": variant,
        "sizes": list(settings.sizes),
        "qualities": list(settings.qualities),
        "background": list(settings.background),
        "enlarge": settings.enlarge,
        "threads": settings.vips_threads,
        "out_dir": str(folder),
    }
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run(
        ["node", str(SHARP_DIR / "thumbs.js"), str(spec_path)], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"sharp ({variant}) failed: {done.stderr[-3000:]}")
    listing = json.loads(done.stdout.strip().splitlines()[-1])
    return {(Path(o["file"]).stem, int(o["size"])): Path(o["path"]) for o in listing["outputs"]}


def sharp_versions() -> str:
    done = subprocess.run(
        ["node", "-e", "const s=require('sharp');console.log(s.versions.sharp+' (libvips '+s.versions.vips+')')"],
        capture_output=True,
        text=True,
        cwd=SHARP_DIR,
    )
    return done.stdout.strip()


def sharp_jpeg_shrink(width: int, height: int, box: int) -> int:
    """The shrink-on-load sharp 0.35 picks for fit "contain" with its default fastShrinkOnLoad (its
    pipeline.cc, in words: the largest of 8/4/2 not above the shrink, halved again when the shrink's
    integer part equals it, "for known libjpeg rounding errors"). Only to name a cause in the report."""
    shrink = max(width, height) / box
    factor = next((f for f in (8, 4, 2) if shrink >= f), 1)
    if factor > 1 and int(shrink) == factor:
        factor //= 2
    return factor


# -- measuring ---------------------------------------------------------------------------------------


def srgb(source: Path | pyvips.Image) -> pyvips.Image:
    """8-bit three-band sRGB pixels, in memory."""
    img = pyvips.Image.new_from_buffer(source.read_bytes(), "") if isinstance(source, Path) else source
    if img.interpretation != "srgb" or img.bands not in (3, 4):
        img = img.colourspace("srgb")
    if img.hasalpha():
        img = img.flatten(background=list(WHITE))
    return img[0:3].cast("uchar").copy_memory()


def _values(img: pyvips.Image) -> list[float]:
    values = array("d")
    values.frombytes(img.cast("double").write_to_memory())
    return list(values)


def content_box(img: pyvips.Image, background: tuple[int, int, int] = WHITE) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of the rows and columns whose mean luma differs from the padding's;
    None for an image that is all padding."""
    bg_luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    diff = (img.colourspace("b-w")[0].cast("float") - bg_luma).abs()
    # First roughly (any pixel far from the padding), to know which rows a column's mean is taken
    # over (an 800x60 strip must not be diluted by 740 rows of padding), then by the means.
    cols, rows = (diff > 4 * PAD_THRESHOLD).project()
    xs = [i for i, v in enumerate(_values(cols)) if v > 0]
    ys = [i for i, v in enumerate(_values(rows)) if v > 0]
    if not xs or not ys:
        return None
    for _ in range(2):
        x0, x1, y0, y1 = xs[0], xs[-1], ys[0], ys[-1]
        col_sums, _unused = diff.crop(0, y0, img.width, y1 - y0 + 1).project()
        _unused, row_sums = diff.crop(x0, 0, x1 - x0 + 1, img.height).project()
        xs = [i for i, v in enumerate(_values(col_sums)) if v / (y1 - y0 + 1) > PAD_THRESHOLD] or xs
        ys = [i for i, v in enumerate(_values(row_sums)) if v / (x1 - x0 + 1) > PAD_THRESHOLD] or ys
    return xs[0], ys[0], xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1


def expected_box(width: int, height: int, box: int, enlarge: bool) -> tuple[int, int, int, int]:
    """Fit inside box x box (halves rounded up, as libvips' resize), centred: offsets (box - size) // 2."""
    scale = box / max(width, height)
    if scale >= 1 and not enlarge:
        w, h = width, height
    elif width >= height:
        w, h = box, max(1, math.floor(height * scale + 0.5))
    else:
        w, h = max(1, math.floor(width * scale + 0.5)), box
    return (box - w) // 2, (box - h) // 2, w, h


def psnr_of(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def pixel_diff(a: pyvips.Image, b: pyvips.Image) -> dict[str, Any]:
    """Max |a - b| per channel, PSNR (dB, over all channels and pixels), share of pixels that differ."""
    d = (a.cast("int") - b.cast("int")).abs()
    mse = float((d * d).avg())
    return {
        "max": [int(d[i].max()) for i in range(3)],
        "psnr": psnr_of(mse),
        "differing": float((d.bandor() > 0).avg()) / 255.0,
    }


def orient(img: pyvips.Image, tag: int) -> pyvips.Image:
    """What EXIF orientation `tag` asks to be done to the stored pixels to show them upright."""
    if tag == 2:
        return img.fliphor()
    if tag == 3:
        return img.rot180()
    if tag == 4:
        return img.flipver()
    if tag == 5:  # transpose
        return img.rot90().fliphor()
    if tag == 6:
        return img.rot90()
    if tag == 7:  # transverse
        return img.rot270().fliphor()
    if tag == 8:
        return img.rot270()
    return img


def pad(img: pyvips.Image, box: int, background: tuple[int, int, int] = WHITE) -> pyvips.Image:
    return img.gravity("centre", box, box, extend="background", background=list(background))


def fit(img: pyvips.Image, box: int, *, fair: bool = False) -> pyvips.Image:
    """Fit inside box x box with Lanczos3; fair: without vips_resize's box-filter pre-shrink (gap=0),
    one Lanczos3 pass over every source pixel (slow, but the reference both peers are judged by)."""
    scale = box / max(img.width, img.height)
    if scale >= 1:
        return img
    return img.resize(scale, gap=0.0) if fair else img.resize(scale)


def stored_pixels(path: Path, limit: int) -> pyvips.Image:
    """The pixels as stored (not autorotated), sRGB, on white, the long side at most `limit` (for the
    orientation check only: a JPEG is decoded with a shrink that leaves twice the limit)."""
    data = path.read_bytes()
    img = pyvips.Image.new_from_buffer(data, "")
    if str(img.get("vips-loader")).startswith("jpeg"):
        factor = next((f for f in (8, 4, 2) if max(img.width, img.height) / f >= 2 * limit), 1)
        if factor > 1:
            img = pyvips.Image.new_from_buffer(data, "", shrink=factor)
    return fit(srgb(img), limit).copy_memory()


def _small(img: pyvips.Image) -> pyvips.Image:
    """Orientation is a coarse question: compared at about 100x100 (box-filter shrink), as floats."""
    k = max(1, img.width // 100)
    return (img.shrink(k, k) if k > 1 else img).cast("float").copy_memory()


def orientation_candidates(stored: pyvips.Image, box: int) -> dict[int, pyvips.Image]:
    """The stored pixels under each of the 8 EXIF transforms, fitted and padded to the box."""
    return {tag: _small(pad(fit(orient(stored, tag), box), box)) for tag in range(1, 9)}


def orientation_match(candidates: dict[int, pyvips.Image], out: pyvips.Image) -> dict[str, Any]:
    """The EXIF transform whose result is closest to `out` (mean squared error)."""
    small = _small(out)
    errors = {tag: float(((cand - small) * (cand - small)).avg()) for tag, cand in candidates.items()}
    best = min(errors, key=lambda t: errors[t])
    ordered = sorted(errors.values())
    distinct = ordered[1] > 1.5 * ordered[0] + 1.0  # the runner-up clearly worse: the check means something
    return {"best": best, "errors": errors, "distinct": distinct}


def ideal_source(case: Case, path: Path) -> pyvips.Image | None:
    """Full decode, embedded profile applied, flattened, upright: what an ideal thumbnail is resized from."""
    img = pyvips.Image.new_from_buffer(path.read_bytes(), "")
    if img.interpretation == "cmyk":
        return None
    if img.get_typeof("icc-profile-data"):
        img = img.icc_transform("srgb", embedded=True, intent="perceptual")
    return orient(srgb(img), case.orientation)


def causes(case: Case, head: pyvips.Image, box: int, variant: str, settings: ThumbnailSettings) -> list[str]:
    """The known pipeline differences that apply to this row (not a proof: each was checked once by
    reproducing sharp's pixels exactly with pyvips, see bench/RESULTS.md)."""
    out = []
    largest = max(settings.sizes)
    w, h = head.width, head.height
    if str(head.get("vips-loader")).startswith("jpeg"):
        theirs_box = largest if variant == "cascade" else box
        mine = jpeg_shrink(w, h, largest, settings.fit)
        theirs = sharp_jpeg_shrink(w, h, theirs_box)
        if mine != theirs:
            out.append(f"shrink-on-load ours 1/{mine}, sharp 1/{theirs}")
    if box != largest:
        if variant == "cascade" and box != sorted(settings.sizes)[-2]:
            out.append("ours from our 400, sharp's from its 800")
        elif variant == "clone":
            out.append("sharp: a new decode for this size")
    if head.hasalpha():
        out.append("alpha: ours flattens after the resize, sharp before")
    # Profiles (CMYK, Display P3) are no cause since both convert to sRGB with the perceptual intent.
    return out


def compare_case(
    case: Case,
    path: Path,
    ours_files: dict[int, Path],
    sharp_files: dict[str, dict[tuple[str, int], Path]],
    settings: ThumbnailSettings,
    *,
    ideal: bool = True,
) -> list[dict[str, Any]]:
    head = pyvips.Image.new_from_buffer(path.read_bytes(), "")
    w, h = (head.height, head.width) if case.orientation >= 5 else (head.width, head.height)
    stored = stored_pixels(path, max(settings.sizes))
    source = ideal_source(case, path) if ideal else None
    rows = []
    for box in sorted(settings.sizes):
        mine = srgb(ours_files[box])
        candidates = orientation_candidates(stored, box)
        om = orientation_match(candidates, mine)
        expected = expected_box(w, h, box, settings.enlarge)
        best = pad(fit(source, box, fair=True), box).copy_memory() if source is not None else None
        row: dict[str, Any] = {
            "case": case.name,
            "box": box,
            "expected_box": list(expected),
            "orientation_checkable": om["distinct"],
            "ours": {
                "dims": [mine.width, mine.height],
                "box": content_box(mine, settings.background),
                "orientation": om["best"],
                "bytes": ours_files[box].stat().st_size,
            },
        }
        o = row["ours"]
        o["padding_as_expected"] = o["box"] is None or list(o["box"]) == list(expected)
        o["orientation_right"] = o["orientation"] == case.orientation or not om["distinct"]
        if best is not None:
            o["psnr_ideal"] = pixel_diff(mine, best)["psnr"]
        for variant, files in sharp_files.items():
            f = files[(case.name, box)]
            theirs = srgb(f)
            tm = orientation_match(candidates, theirs)
            s: dict[str, Any] = {
                "dims": [theirs.width, theirs.height],
                "box": content_box(theirs, settings.background),
                "orientation": tm["best"],
                "bytes": f.stat().st_size,
                "bytes_equal": f.read_bytes() == ours_files[box].read_bytes(),
                "causes": causes(case, head, box, variant, settings),
            }
            s["dims_equal"] = s["dims"] == o["dims"]
            s["padding_equal"] = s["box"] == o["box"]
            # Unequal only when both verdicts are clear (sharp's clone at 150 of the alpha screenshot is
            # not: flattened before its resize, it sits between two candidates).
            s["orientation_equal"] = s["orientation"] == o["orientation"] or not (om["distinct"] and tm["distinct"])
            if s["dims_equal"]:
                s.update(pixel_diff(mine, theirs))
            if best is not None:
                s["psnr_ideal"] = pixel_diff(theirs, best)["psnr"]
            row[variant] = s
        rows.append(row)
    return rows


# -- report ------------------------------------------------------------------------------------------


def fmt_psnr(p: float | None) -> str:
    if p is None:
        return "-"
    return "inf" if math.isinf(p) else f"{p:.1f}"


def _peer_cells(row: dict[str, Any], variant: str) -> str:
    s = row[variant]
    checks = [
        "dims =" if s["dims_equal"] else f"dims ≠ {s['dims'][0]}x{s['dims'][1]}",
        "pad =" if s["padding_equal"] else f"pad ≠ {','.join(map(str, s['box'] or ())) or 'none'}",
        ("orient =" if s["orientation_equal"] else f"orient ≠ {s['orientation']}")
        if row["orientation_checkable"]
        else "orient n/a",
    ]
    if not s["dims_equal"]:
        return f"{', '.join(checks)} | - | - "
    mx = "/".join(str(v) for v in s["max"])
    if s["bytes_equal"]:
        note = " (bytes =)"
    elif math.isinf(s["psnr"]):
        note = ""  # the same pixels, other Huffman tables
    else:
        note = f" ({s['differing'] * 100:.0f} % px)"
    return f"{', '.join(checks)} | {mx} | {fmt_psnr(s['psnr'])}{note}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| class | box | ours: content x,y,w,h; orientation | vs sharp cascade | max diff R/G/B | PSNR dB "
        "| vs sharp clone | max diff R/G/B | PSNR dB | PSNR vs ideal: ours / cascade / clone "
        "| known causes (cascade; clone) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    last = None
    for row in rows:
        name = row["case"] if row["case"] != last else ""
        last = row["case"]
        o = row["ours"]
        box = "all padding" if o["box"] is None else ",".join(map(str, o["box"]))
        if not o["padding_as_expected"]:
            box += f" (expected {','.join(map(str, row['expected_box']))})"
        orientation = str(o["orientation"]) if row["orientation_checkable"] else "n/a"
        if not o["orientation_right"]:
            orientation += " WRONG"
        ideal = " / ".join(fmt_psnr(x.get("psnr_ideal")) for x in (o, row["cascade"], row["clone"]))
        why = "; ".join(", ".join(row[v]["causes"]) or "-" for v in VARIANTS)
        lines.append(
            f"| {name} | {row['box']} | {box}; {orientation} | {_peer_cells(row, 'cascade')} | "
            f"{_peer_cells(row, 'clone')} | {ideal} | {why} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cases", default="", help="comma-separated case names (default: all): " + ",".join(c.name for c in cases())
    )
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--no-ideal", action="store_true", help="skip the full-resolution reference (faster)")
    args = ap.parse_args()
    if not sharp_installed():
        sys.exit("sharp is not installed in bench/sharp: run `make sharp`")
    settings = ThumbnailSettings()
    chosen = cases()
    if args.cases:
        wanted = set(args.cases.split(","))
        chosen = [c for c in chosen if c.name in wanted]
    t0 = time.perf_counter()
    paths = {c.name: corpus_file(c) for c in chosen}
    print(f"corpus ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    ours_files = {c.name: ours(c, paths[c.name], settings, OUT / "ours") for c in chosen}
    sharp_files = {v: sharp(list(paths.values()), v, settings, OUT / f"sharp-{v}") for v in VARIANTS}
    rows = []
    for c in chosen:
        rows.extend(compare_case(c, paths[c.name], ours_files[c.name], sharp_files, settings, ideal=not args.no_ideal))
    print(table(rows))
    if args.json:
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "versions": {
                "libvips (ours)": ".".join(str(pyvips.version(i)) for i in range(3)),
                "pyvips": getattr(pyvips, "__version__", "?"),
                "sharp": sharp_versions(),
                "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
            },
            "settings": {"sizes": settings.sizes, "qualities": settings.qualities, "fit": settings.fit.value},
            "cases": {c.name: c.what for c in chosen},
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
