"""A PDF's first page as a PNG, rendered by poppler's pdftoppm in a child process.

Not pdf2image: its convert_from_bytes/convert_from_path also run `pdfinfo` and `pdftoppm -v`
without any timeout (pdf2image 1.17.0), so a hostile file could hang a worker thread for ever.
Here the one child we start is bounded in wall-clock time (killed after the timeout), in address
space (prlimit), and in output size (-scale-to: the long side of the largest thumbnail).
"""

from __future__ import annotations

import logging
import shutil
import subprocess

from civic_runner.pipeline.errors import InputError

log = logging.getLogger("civic_runner.pipeline.pdf")

PDFTOPPM = "pdftoppm"


def command(box: int, max_memory_mb: int, prlimit: str | None, pdftoppm: str = PDFTOPPM) -> list[str]:
    """First page only, long side `box` pixels, PNG on stdout, the PDF on stdin (no temp files)."""
    render = [pdftoppm, "-png", "-f", "1", "-l", "1", "-singlefile", "-scale-to", str(box), "-"]
    if prlimit is None:
        return render
    # prlimit execs pdftoppm: the limit and the timeout's kill apply to the renderer itself.
    return [prlimit, f"--as={max_memory_mb * 1024 * 1024}", "--", *render]


def explain(returncode: int, stderr: str, max_memory_mb: int) -> str:
    """pdftoppm's failure as a sentence (exit codes: 1 cannot open, 3 permissions, 99 other)."""
    err = stderr.lower()
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
    if "incorrect password" in err:
        return "The PDF is password-protected, so its pages cannot be read."
    if returncode == 3 or "permission" in err:
        return "The PDF's permissions do not allow its pages to be rendered."
    if "bad_alloc" in err or "out of memory" in err or "cannot allocate" in err or returncode < 0:
        return (
            f"Rendering the PDF's first page needed more than the {max_memory_mb} MB of memory allowed, "
            f"or crashed the renderer ({last or f'signal {-returncode}'})."
        )
    if "wrong page range" in err or "no pages" in err:
        return "The PDF has no pages."
    if returncode == 1 or "syntax error" in err or "may not be a pdf" in err:
        return f"The PDF is damaged or is not a real PDF, so it could not be opened ({last or 'no details'})."
    return f"The PDF could not be rendered (pdftoppm exit code {returncode}: {last or 'no details'})."


def available() -> bool:
    return shutil.which(PDFTOPPM) is not None


def render_first_page(data: bytes, box: int, timeout: float, max_memory_mb: int) -> bytes:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        log.warning("prlimit not found (util-linux): pdftoppm runs without a memory limit")
    if not available():
        raise RuntimeError("pdftoppm not found: install poppler-utils")
    try:
        done = subprocess.run(
            command(box, max_memory_mb, prlimit), input=data, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(
            f"Rendering the PDF's first page took longer than {timeout:g} s, so it was stopped; "
            "the file is too complex."
        ) from exc
    stderr = done.stderr.decode("utf-8", "replace")[-2000:]
    if done.returncode != 0:
        raise InputError(explain(done.returncode, stderr, max_memory_mb))
    if not done.stdout.startswith(b"\x89PNG"):
        raise InputError("The PDF's first page rendered to nothing (the PDF may have no pages).")
    return done.stdout
