"""Thumbnails per second, latency and peak RSS: our worker's render path vs sharp, same corpus, same cores.

    python -m bench.thumbnails [--rounds 3] [--concurrency 2] [--quick]

Both peers make the same outputs from the same files: three sizes (150/400/800), fitted inside the
square and padded on white, EXIF orientation applied, metadata stripped, JPEG q80/85/90. Ours is
civic_runner.pipeline.thumbnail.render (what the worker runs between download and upload) in a
thread pool of --concurrency threads, as the runner's thumbnails queue runs it; sharp runs
--concurrency lanes of promises (libuv's pool). Each (peer, class, round) is its own process, so
peak RSS belongs to that class alone; rounds are interleaved and the median is reported.
sharp cannot render PDFs (its bundled libvips has no PDF loader): PDFs are measured for ours only.
The corpus is generated (bench/out/corpus-thumbs), never downloaded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, log, machine

CORPUS = ROOT / "bench" / "out" / "corpus-thumbs"
PYTHONS: dict[str, str] = {}  # peer -> interpreter, for "ours" under another libvips
SHARP_DIR = ROOT / "bench" / "sharp"

# class: (what, files, declared type)
CLASSES: dict[str, tuple[str, int, str]] = {
    "photo-12mp": ("12 MP JPEG photos (4000x3000, q90, ~3.5 MB)", 12, "image/jpeg"),
    "screenshot-png": ("PNG screenshots (2560x1600 and 3840x2160, with a photo inset, 3-6 MB)", 8, "image/png"),
    "photo-50mp": ("50 MP JPEG photos (8660x5773, q90)", 6, "image/jpeg"),
    "screenshot-50mp-png": ("50 MP PNG (8660x5773 screenshot-like)", 3, "image/png"),
    "pdf": ("PDF documents (letter, 3 pages; ours only)", 8, "application/pdf"),
}


def make_corpus(quick: bool) -> dict[str, list[Path]]:
    sys.path.insert(0, str(ROOT / "job-runner" / "src"))
    from devenv import corpus

    out: dict[str, list[Path]] = {}
    for name, (_, count, _) in CLASSES.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        n = max(2, count // 3) if quick else count
        paths = []
        for i in range(n):
            path = folder / f"{i:02d}.{'pdf' if name == 'pdf' else 'png' if 'png' in name else 'jpg'}"
            if not path.exists():
                if name == "photo-12mp":
                    data = corpus.jpeg(4000, 3000, seed=10 + i, noise=6)
                elif name == "screenshot-png":
                    w, h = (2560, 1600) if i % 2 else (3840, 2160)
                    data = corpus.screenshot_png(w, h, photo_inset=True)
                elif name == "photo-50mp":
                    data = corpus.jpeg(8660, 5773, seed=50 + i, noise=6)
                elif name == "screenshot-50mp-png":
                    data = corpus.screenshot_png(8660, 5773, photo_inset=False)
                else:
                    data = corpus.pdf(3)
                path.write_bytes(data)
                log(f"  made {path.relative_to(ROOT)} ({len(data) / 1e6:.1f} MB)")
            paths.append(path)
        out[name] = paths
    return out


# -- one measured process ---------------------------------------------------------------------------


def worker_main(spec_path: str) -> None:
    """Ours, in this process: spec -> one JSON line (as bench/sharp/thumbs.js)."""
    sys.path.insert(0, str(ROOT / "job-runner" / "src"))
    from civic_runner.pipeline.config import ThumbnailSettings
    from civic_runner.pipeline.thumbnail import render

    spec = json.loads(Path(spec_path).read_text())
    settings = ThumbnailSettings()
    sample: list[list[int]] = []

    def one(path: str) -> float:
        t0 = time.perf_counter()
        data = Path(path).read_bytes()  # the worker's download, from the page cache
        _, out = render(spec["file_type"], data, settings)
        if not sample:
            sample.extend([r.width, r.height, len(r.data)] for r in out)
        return (time.perf_counter() - t0) * 1000

    # Steady state, as a long-running runner: the S3 clients built at import (a background thread)
    # and one unmeasured image first, as thumbs.js does.
    for thread in threading.enumerate():
        if thread.name == "pipeline-warm":
            thread.join()
    render(spec["file_type"], Path(spec["files"][0]).read_bytes(), settings)
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(spec["concurrency"]) as pool:
        latencies = list(pool.map(one, spec["files"]))
    wall = time.perf_counter() - started
    out = {"latencies_ms": latencies, "wall_s": wall, "cpu_s": cpu_seconds() - cpu0, "max_rss_mb": peak_rss_mb()}
    print(json.dumps({**out, "sample": sample}))


def cpu_seconds() -> float:
    """This process and its children (pdftoppm, heif-convert) once they have exited."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def peak_rss_mb() -> float:
    """VmHWM: this process's own peak (getrusage's ru_maxrss would include the parent's peak from before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(
    peer: str, files: list[Path], file_type: str, concurrency: int, env: dict[str, str], repeat: int
) -> dict[str, Any]:
    spec = {
        "files": [str(f) for f in files] * repeat,
        "concurrency": concurrency,
        "file_type": file_type,
        "variant": peer.split(":", 1)[1] if peer.startswith("sharp:") else "",
        "sizes": [150, 400, 800],
        "qualities": [80, 85, 90],
        "background": [255, 255, 255],
    }
    spec_path = CORPUS / f"spec-{os.getpid()}.json"
    spec_path.write_text(json.dumps(spec))
    if peer.startswith("ours"):
        python = PYTHONS.get(peer, sys.executable)
        cmd = [python, "-m", "bench.thumbnails", "--worker", str(spec_path)]
    else:
        cmd = ["node", str(SHARP_DIR / "thumbs.js"), str(spec_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{peer} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def vips_of(python: str) -> str:
    code = "import pyvips; print('%d.%d.%d' % (pyvips.version(0), pyvips.version(1), pyvips.version(2)))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def versions() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "job-runner" / "src"))
    import pyvips

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    sharp = subprocess.run(
        ["node", "-e", "const s=require('sharp');console.log(s.versions.sharp+' / libvips '+s.versions.vips)"],
        capture_output=True,
        text=True,
        cwd=SHARP_DIR,
    ).stdout.strip()
    pdftoppm = subprocess.run(["pdftoppm", "-v"], capture_output=True, text=True).stderr.splitlines()[0]
    return {
        "libvips (ours)": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
        + (" (pyvips-binary)" if pyvips.API_mode else " (system)"),
        **{f"libvips ({peer})": vips_of(py) for peer, py in PYTHONS.items()},
        "pyvips": getattr(pyvips, "__version__", "?"),
        "poppler": pdftoppm,
        "sharp": sharp,
        "node": node,
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quick", action="store_true", help="a third of the files, for a smoke run")
    ap.add_argument(
        "--min-images", type=int, default=24, help="go round a class's files until this many images per run"
    )
    ap.add_argument("--classes", default=",".join(CLASSES))
    ap.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="also measure ours under another interpreter, e.g. debian-libvips=/tmp/venv-deb/bin/python "
        "(a venv with pyvips but without pyvips-binary: the system's libvips)",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    if not (SHARP_DIR / "node_modules" / "sharp").exists():
        log("installing sharp into bench/sharp (npm ci)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SHARP_DIR, check=True)
    log("corpus")
    corpus = make_corpus(args.quick)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peers = ["ours", "sharp:clone", "sharp:cascade"]
    for also in args.also:
        label, _, python = also.partition("=")
        PYTHONS[f"ours:{label}"] = python
        peers.insert(1, f"ours:{label}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    classes = [c for c in args.classes.split(",") if c]
    for rnd in range(args.rounds):
        for name in classes:
            for peer in peers:
                if name == "pdf" and peer.startswith("sharp"):
                    continue
                log(f"round {rnd + 1}/{args.rounds} {name} {peer}")
                repeat = max(1, round(args.min_images / len(corpus[name])))
                r = run_one(peer, corpus[name], CLASSES[name][2], args.concurrency, env, repeat)
                results.setdefault(name, {}).setdefault(peer, []).append(r)
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "classes": {},
    }
    for name, by_peer in results.items():
        summary["classes"][name] = {}
        for peer, runs in by_peer.items():
            per_round_ips = [len(r["latencies_ms"]) / r["wall_s"] for r in runs]
            per_round_cpu = [r["cpu_s"] * 1000 / len(r["latencies_ms"]) for r in runs]
            all_lat = [x for r in runs for x in r["latencies_ms"]]
            summary["classes"][name][peer] = {
                "images": len(runs[0]["latencies_ms"]),
                "images_per_s": statistics.median(per_round_ips),
                "cpu_ms_per_image": statistics.median(per_round_cpu),
                "p50_ms": pct(all_lat, 0.5),
                "p95_ms": pct(all_lat, 0.95),
                "max_ms": max(all_lat),
                "peak_rss_mb": max(r["max_rss_mb"] for r in runs),
                "sample_outputs": runs[0]["sample"],
            }
    out = ROOT / "bench" / "out" / "thumbnails.json"
    out.write_text(json.dumps(summary, indent=2))
    print(render_table(summary))
    log(f"wrote {out.relative_to(ROOT)}")


def render_table(summary: dict[str, Any]) -> str:
    lines = [
        f"concurrency {summary['concurrency']}, {summary['rounds']} interleaved rounds; images/s and CPU ms/image "
        "are medians of the rounds, p50/p95 over all images, peak RSS the worst round",
        "",
        "| class | peer | images/run | images/s | CPU ms/image | p50 ms | p95 ms | peak RSS MB | outputs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_peer in summary["classes"].items():
        for peer, s in by_peer.items():
            outs = ", ".join(f"{w}x{h} {b // 1024} KB" for w, h, b in s["sample_outputs"])
            lines.append(
                f"| {name} | {peer} | {s['images']} | {s['images_per_s']:.2f} | {s['cpu_ms_per_image']:.0f} | "
                f"{s['p50_ms']:.0f} | "
                f"{s['p95_ms']:.0f} | {s['peak_rss_mb']:.0f} | {outs} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
