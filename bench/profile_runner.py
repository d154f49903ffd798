"""Where our runner's time per job goes under the throughput bench's burst (bench/burst.py).

    python -m bench.profile_runner [--jobs 50000] [--procs 2] [--concurrency 1000] [--log-level LEVEL]
                                   [--rate 250] [--blocking] [--out bench/out/profile]

The runner is started exactly as `bench.throughput` starts it (shipped defaults unless --log-level),
then py-spy (a sampling profiler, no change to the runner) attaches to each process by pid and
samples it while it works one burst of N no-op jobs. Each sample is attributed to one part of the
runner (PARTS: the first rule that matches any frame of its stack wins, so a log call made by the
completer counts as logging). Printed and written as JSON: samples and share per part, the leaf
lines that cost most, and from the runner's own /metrics the claims and completion statements per
job. py-spy samples what is on a CPU or waiting for one, so on a loaded machine the shares hold
and the absolute microseconds do not. Needs ptrace rights over the runner (root here).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench import burst, cpu
from bench.common import ROOT, fresh_db, log, machine, start_postgres

R = "civic_runner/"
RUNNER_OTHER = ("runner.py", "elector.py", "maintenance.py", "reindexer.py", "http.py", "access.py", "registry.py")
# (part, file path fragment, function names or None for any); first match over the whole stack wins.
PARTS: tuple[tuple[str, str, frozenset[str] | None], ...] = (
    ("logging", "/logging/", None),
    ("logging", R + "logs.py", None),
    ("metrics", "prometheus_client/", None),
    ("claim statement", R + "driver.py", frozenset({"claim"})),
    ("completion statement", R + "driver.py", frozenset({"complete_many", "_complete_plain", "_complete_general"})),
    ("insert watcher", R + "watcher.py", None),
    ("notifier", R + "notifier.py", None),
    ("job decoding", R + "job.py", None),
    ("outcome planning", R + "outcome.py", None),
    ("worker + executor", R + "executor.py", None),
    ("worker + executor", "bench/kinds.py", None),
    ("completer bookkeeping", R + "completer.py", None),
    ("producer: job start (coroutine + Task creation)", R + "producer.py", frozenset({"_start"})),
    ("producer: job run wrapper", R + "producer.py", frozenset({"_work", "written", "_log_fields"})),
    ("producer: fetch loop, sweeper, upkeep", R + "producer.py", None),
    # Not civic_runner/ as a whole: cli.py (asyncio.run's caller) is at the root of every stack.
    *(("runner: elector, maintenance, other", R + f, None) for f in RUNNER_OTHER),
    ("psycopg, pool (other statements)", "psycopg", None),
    ("event loop", "/asyncio/", None),
    ("event loop", "selectors.py", None),
)
FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*):(?P<line>\d+)\)$")


def split_frame(frame: str) -> tuple[str, str, str]:
    """'Class.method (/path/file.py:12)' -> ('method', '/path/file.py', '12')."""
    m = FRAME.match(frame)
    if not m:
        return frame, "", ""
    return m["func"].rsplit(".", 1)[-1], m["path"], m["line"]


WAITING = "waiting in select (off CPU)"


def attribute(frames: list[str]) -> str:
    parsed = [split_frame(f) for f in frames]
    if parsed and parsed[-1][1].endswith("selectors.py"):
        return WAITING  # the loop blocked in epoll: py-spy --nonblocking cannot tell it is idle
    for part, fragment, funcs in PARTS:
        for func, path, _ in parsed:
            if fragment in path and (funcs is None or func in funcs):
                return part
    return "other"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw output: one 'frame;frame;...;leaf count' line per distinct stack (root first)."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def breakdown(stacks: list[tuple[list[str], int]]) -> dict[str, int]:
    parts: Counter[str] = Counter()
    for frames, n in stacks:
        parts[attribute(frames)] += n
    return dict(parts.most_common())


def leaf(frames: list[str]) -> str:
    """The innermost Python frame, shortened to dir/file:line func."""
    func, path, line = split_frame(frames[-1])
    return f"{'/'.join(Path(path).parts[-2:])}:{line} {func}"


def top_leaves(stacks: list[tuple[list[str], int]], k: int = 20) -> list[tuple[str, int]]:
    leaves: Counter[str] = Counter()
    for frames, n in stacks:
        leaves[leaf(frames)] += n
    return leaves.most_common(k)


def leaves_by_part(stacks: list[tuple[list[str], int]], k: int = 4) -> dict[str, list[tuple[str, int]]]:
    by: dict[str, Counter[str]] = {}
    for frames, n in stacks:
        by.setdefault(attribute(frames), Counter())[leaf(frames)] += n
    return {part: c.most_common(k) for part, c in by.items()}


def scrape(port: int) -> dict[str, float]:
    """The runner's /metrics as {'name{labels}': value} (sums over the labels left out are the caller's)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def per_job(metrics: list[dict[str, float]], n: int) -> dict[str, float]:
    def total(prefix: str) -> float:
        return sum(v for m in metrics for k, v in m.items() if k.startswith(prefix))

    claims = total("civic_runner_claims_total")
    statements = total("civic_runner_completer_batch_size_count")
    return {
        "claims_per_1k_jobs": claims / n * 1000,
        "jobs_per_claim": total("civic_runner_claimed_jobs_total") / claims if claims else 0.0,
        "completion_statements_per_1k_jobs": statements / n * 1000,
        "jobs_per_completion_statement": total("civic_runner_completer_batch_size_sum") / statements
        if statements
        else 0.0,
    }


def profile(args: argparse.Namespace) -> dict[str, Any]:
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy not found: `make venv` installs it (requirements-dev.txt)")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    system = burst.ours(args.procs, args.concurrency, args.log_level)
    server = start_postgres()
    logs = Path(tempfile.mkdtemp(prefix="civic-profile-"))
    try:
        url = fresh_db(server, "profile")
        mon = burst.Monitor(url)
        procs = system.start(url, logs)
        spies: list[subprocess.Popen[bytes]] = []
        try:
            burst.wait_started(mon, system, procs, logs)
            time.sleep(args.settle)
            for p in procs:
                cmd = [py_spy, "record", "--pid", str(p.pid), "--format", "raw", "--full-filenames"]
                cmd += ["--rate", str(args.rate), "-o", str(out_dir / f"ours-{p.pid}.txt")]
                if not args.blocking:
                    cmd.append("--nonblocking")  # sampling does not pause the runner
                spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            time.sleep(1.0)  # attached (idle samples are not recorded)
            before = [scrape(system.metrics_ports[p.pid]) for p in procs]
            committed = burst.insert_burst(url, args.jobs)
            meter = cpu.Meter([p.pid for p in procs], cpu.postmaster_pid(server.data))
            burst.wait_drained(mon, "ours", procs, args.jobs, logs, 900)
            window = meter.stop()
            after = [scrape(system.metrics_ports[p.pid]) for p in procs]
            for s in spies:
                s.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            for s in spies:
                _, err = s.communicate(timeout=60)
                if s.returncode not in (0, -signal.SIGINT):
                    raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
        finally:
            for s in spies:
                if s.poll() is None:
                    s.kill()
            burst.stop(procs)
        seconds, _ = burst.timing(mon, "ours", args.jobs, committed, logs)
        mon.close()
    finally:
        server.destroy()
        shutil.rmtree(logs, ignore_errors=True)
    stacks = [s for f in sorted(out_dir.glob("ours-*.txt")) for s in parse_collapsed(f.read_text())]
    parts = breakdown(stacks)
    waiting = parts.pop(WAITING, 0)
    samples = sum(parts.values())
    cpu_us = window.system / args.jobs * 1e6
    delta = [{k: a.get(k, 0.0) - b.get(k, 0.0) for k in a} for a, b in zip(after, before, strict=True)]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "jobs": args.jobs,
        "procs": args.procs,
        "concurrency": args.concurrency,
        "log_level": args.log_level or "shipped",
        "rate_hz": args.rate,
        "jobs_per_s": args.jobs / seconds,
        "samples": samples,
        "waiting_samples": waiting,
        # The runner processes' own CPU time per job during the burst (user + system, all processes).
        "cpu_us_per_job": cpu_us,
        "db_cpu_us_per_job": window.database / args.jobs * 1e6,
        # Shares of the samples taken on a CPU (or waiting for one); µs = share x the CPU time per job.
        "parts": {
            k: {"samples": v, "share": v / samples, "cpu_us_per_job": v / samples * cpu_us} for k, v in parts.items()
        },
        "lines_by_part": leaves_by_part([s for s in stacks if attribute(s[0]) != WAITING]),
        "top_lines": top_leaves(stacks),
        "round_trips": per_job(delta, args.jobs),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['jobs']} jobs, {report['procs']} x {report['concurrency']}, log level {report['log_level']}: "
        f"{report['jobs_per_s']:.0f} jobs/s; runner CPU {report['cpu_us_per_job']:.1f} µs/job, PostgreSQL "
        f"{report['db_cpu_us_per_job']:.1f} µs/job; {report['samples']} samples on CPU at {report['rate_hz']} Hz "
        f"(+{report['waiting_samples']} waiting in select, left out)",
        "",
        "| part | share | ≈ CPU µs/job | where (innermost lines) |",
        "|---|---|---|---|",
    ]
    for part, v in report["parts"].items():
        where = "; ".join(w for w, _ in report["lines_by_part"].get(part, [])[:3])
        lines.append(f"| {part} | {v['share'] * 100:.1f} % | {v['cpu_us_per_job']:.1f} | {where} |")
    lines += ["", "top lines (innermost Python frame):"]
    lines += [f"  {n:6d}  {where}" for where, n in report["top_lines"]]
    lines += ["", "round trips: " + ", ".join(f"{k} {v:.2f}" for k, v in report["round_trips"].items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--log-level", default=None, help="LOG_LEVEL of the runner (default: as shipped)")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--blocking", action="store_true", help="let py-spy pause the runner at each sample")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "profile"))
    args = ap.parse_args()
    for old in Path(args.out).glob("ours-*.txt"):
        old.unlink()
    report = profile(args)
    (Path(args.out) / "profile.json").write_text(json.dumps(report, indent=2))
    text = render(report)
    (Path(args.out) / "profile.md").write_text(text + "\n")
    log("profile:\n" + text)


if __name__ == "__main__":
    main()
