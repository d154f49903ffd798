"""docs/configuration.md against the code. Every setting the code knows has a row on the page, with its flags and
its default, and the page names no setting the code does not know:

- the runner: `civic-runner run --help` (run as a process: the flags, their variables and defaults);
- the file pipeline: the environment variables civic_runner/pipeline/config.py reads, and the defaults
  `from_env({})` gives them;
- the operator: `civic-operator --help` (a process) and the defaults its parser gives with an empty environment,
  plus POD_ID (read by civic_operator/peering.py);
- CivicWorkerPool: the CRD's spec fields and defaults;
- the chart: every value of values.schema.json, with its default from values.yaml.

Pure: no server; the chart part reads the JSON schema and values.yaml (helm is not needed)."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.docs.markdown import ROOT

pytestmark = pytest.mark.unit

DOC = ROOT / "docs" / "configuration.md"
CHART = ROOT / "charts" / "civic-workers"
PIPELINE_CONFIG = ROOT / "job-runner" / "src" / "civic_runner" / "pipeline" / "config.py"
RUNNER_CONFIG = ROOT / "job-runner" / "src" / "civic_runner" / "config.py"
CRD = ROOT / "crds" / "civicworkerpool.yaml"
ENV_NAME = re.compile(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""")


# --- the page --------------------------------------------------------------------------------------


def sections() -> dict[str, list[str]]:
    """Table rows by `## ` section (its `### ` subsections included)."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif line.startswith("| ") and current and not re.match(r"^\|[-| ]+\|$", line):
            out[current].append(line)
    return out


def section(title_start: str) -> list[str]:
    found = [rows for title, rows in sections().items() if title.startswith(title_start)]
    assert len(found) == 1, f"docs/configuration.md needs one section '## {title_start}…'"
    return found[0]


def names_in_first_cell(row: str) -> list[str]:
    return re.findall(r"`([^`]+)`", row.split("|")[1])


def row_for(rows: list[str], name: str) -> str | None:
    return next((r for r in rows if name in names_in_first_cell(r)), None)


def renderings(value: Any) -> set[str] | None:
    """How a default may be written in the page (in backticks); None: not a scalar, not checked."""
    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, float):
        return {f"{value:g}", repr(value)}
    if isinstance(value, str):
        return {value} if value else {'""'}
    if isinstance(value, int):
        return {str(value)}
    if value is None:
        return {"null"}
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        out = {",".join(map(str, value))}
        if len(value) == 3 and all(0 <= v <= 255 for v in value):
            out.add("#{:02x}{:02x}{:02x}".format(*value))
        return out
    return None


def check_default(row: str, name: str, value: Any, problems: list[str]) -> None:
    shown = renderings(value)
    if shown is not None and not any(f"`{s}`" in row for s in shown):
        problems.append(f"{name}: the default {value!r} is not in its row: {row}")


# --- what the programs say -------------------------------------------------------------------------


@dataclasses.dataclass
class Option:
    flags: list[str]
    env: list[str]
    default: Any = None
    has_default: bool = False


def help_options(*module_and_args: str) -> list[Option]:
    """The options of an argparse --help, run as a process with a wide terminal (one line per option)."""
    proc = subprocess.run(
        [sys.executable, "-m", *module_and_args, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000"},
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    text = proc.stdout.split("options:", 1)[1]
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif line.startswith("   ") and entries:
            entries[-1] += "  " + line.strip()
    options = []
    for entry in entries:
        head = re.split(r"\s{2,}", entry, maxsplit=1)[0]
        flags = [f for f in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", head) if f not in ("-h", "--help")]
        if not flags:
            continue
        env = re.search(r"\[env ([A-Z0-9_]+(?: / [A-Z0-9_]+)*)", entry)
        default = re.search(r"; default (.+?)\]", entry)
        opt = Option(flags, env.group(1).split(" / ") if env else [])
        if default:
            opt.default, opt.has_default = ast.literal_eval(default.group(1)), True
        options.append(opt)
    assert options, f"no options parsed from {' '.join(module_and_args)} --help"
    return options


def env_names_in(path: Any) -> set[str]:
    return set(ENV_NAME.findall(path.read_text()))


# --- the runner ------------------------------------------------------------------------------------


def test_every_runner_setting_is_documented() -> None:
    rows = section("The runner")
    problems: list[str] = []
    options = help_options("civic_runner.cli", "run")
    for opt in options:
        assert opt.env, f"{opt.flags}: civic-runner run --help names no environment variable"
        row = row_for(rows, opt.env[0])
        if row is None:
            problems.append(f"{opt.env[0]} ({', '.join(opt.flags)}) has no row")
            continue
        problems += [
            f"{opt.env[0]}: {name} is not in its row" for name in opt.env + opt.flags if f"`{name}`" not in row
        ]
        if opt.has_default:
            check_default(row, opt.env[0], opt.default, problems)
    # Read by config.py besides the settings table (Civic OS's name for the thumbnails concurrency).
    known = {name for opt in options for name in opt.env} | {f for opt in options for f in opt.flags}
    for extra in env_names_in(RUNNER_CONFIG) - known:
        if row_for(rows, extra) is None:
            problems.append(f"{extra} (read by civic_runner/config.py) has no row")
    stale = [n for r in rows for n in names_in_first_cell(r) if n not in known | env_names_in(RUNNER_CONFIG)]
    problems += [f"{n}: documented, but civic-runner run does not know it" for n in stale]
    assert not problems, "docs/configuration.md, runner:\n" + "\n".join(problems)


# --- the file pipeline -----------------------------------------------------------------------------


def pipeline_defaults() -> dict[str, Any]:
    """The defaults from_env({}) gives, by variable: S3_X is s3.x, THUMBNAIL_X thumbnails.x, PIPELINE_X x."""
    from civic_runner.pipeline.config import from_env

    cfg = from_env({})
    out: dict[str, Any] = {}
    for name in env_names_in(PIPELINE_CONFIG):
        prefix, _, rest = name.partition("_")
        target = {"S3": cfg.s3, "THUMBNAIL": cfg.thumbnails, "PIPELINE": cfg}.get(prefix)
        field = rest.lower()
        if target is not None and hasattr(target, field):
            value = getattr(target, field)
            out[name] = str(value) if isinstance(value, str) else value  # StrEnum members as their value
    return out


def test_every_pipeline_setting_is_documented() -> None:
    rows = section("The file pipeline")
    problems: list[str] = []
    read = env_names_in(PIPELINE_CONFIG)
    assert {"S3_BUCKET", "THUMBNAIL_SIZES", "PIPELINE_DB_MAX_CONNS"} <= read, "the source scan found too little"
    for name in sorted(read):
        if row_for(rows, name) is None:
            problems.append(f"{name} (read by civic_runner/pipeline/config.py) has no row")
    defaults = pipeline_defaults()
    assert len(defaults) >= 15, defaults
    for name, value in sorted(defaults.items()):
        row = row_for(rows, name)
        if row is not None and value is not None:
            check_default(row, name, value, problems)
    runner_env = {n for opt in help_options("civic_runner.cli", "run") for n in opt.env}
    stale = [n for r in rows for n in names_in_first_cell(r) if n not in read | runner_env]
    problems += [f"{n}: documented, but the pipeline does not read it" for n in stale]
    assert not problems, "docs/configuration.md, file pipeline:\n" + "\n".join(problems)


# --- the operator ----------------------------------------------------------------------------------


def test_every_operator_setting_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = section("The operator")
    problems: list[str] = []
    options = help_options("civic_operator.main")
    env_names = {n for opt in options for n in opt.env}
    for name in env_names:
        monkeypatch.delenv(name, raising=False)
    from civic_operator.main import parse

    defaults = vars(parse([]))
    for opt in options:
        assert opt.env, f"{opt.flags}: civic-operator --help names no environment variable"
        row = row_for(rows, opt.env[0])
        if row is None:
            problems.append(f"{opt.env[0]} ({', '.join(opt.flags)}) has no row")
            continue
        problems += [
            f"{opt.env[0]}: {name} is not in its row" for name in opt.env + opt.flags if f"`{name}`" not in row
        ]
        dest = next(f for f in opt.flags if f.startswith("--")).lstrip("-").replace("-", "_")
        check_default(row, opt.env[0], defaults[dest], problems)
    peering = ROOT / "operator" / "src" / "civic_operator" / "peering.py"
    for extra in env_names_in(peering) - env_names:
        if row_for(rows, extra) is None:
            problems.append(f"{extra} (read by civic_operator/peering.py) has no row")
    stale = [n for r in rows for n in names_in_first_cell(r) if n not in env_names | env_names_in(peering)]
    problems += [f"{n}: documented, but civic-operator does not read it" for n in stale]
    assert not problems, "docs/configuration.md, operator:\n" + "\n".join(problems)


# --- CivicWorkerPool -------------------------------------------------------------------------------

FREE_FORM = {"resources", "affinity", "env", "tolerations", "nodeSelector", "labels", "annotations"}


def crd_fields(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, sub
        if key not in FREE_FORM:
            yield from crd_fields(sub, path)


def test_every_pool_field_is_documented() -> None:
    rows = section("CivicWorkerPool")
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    problems: list[str] = []
    fields = dict(crd_fields(spec))
    for path, sub in fields.items():
        row = row_for(rows, path)
        if row is None:
            problems.append(f"spec.{path} has no row")
        elif "default" in sub and not isinstance(sub["default"], dict | list):
            check_default(row, path, sub["default"], problems)
    problems += [
        f"{n}: documented, but not a field of the CRD" for r in rows for n in names_in_first_cell(r) if n not in fields
    ]
    assert not problems, "docs/configuration.md, CivicWorkerPool:\n" + "\n".join(problems)


# --- the chart -------------------------------------------------------------------------------------

LEAVES = {"resources", "autoscaling", "jobs", "affinity"}  # Kubernetes' or the CRD's own types
POOLS = ("s3Signer", "thumbnails")


def value_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """Every value's documented path (the default pools as `pools.<pool>`) and its real paths."""
    props = schema.get("properties")
    if not props or schema.get("additionalProperties") is not False:
        return
    for key, sub in props.items():
        path = f"{prefix}.{key}" if prefix else key
        if path == "global":
            continue
        if path in (f"pools.{p}" for p in POOLS):
            if key != POOLS[0]:
                continue
            path = "pools.<pool>"
        yield path, [path.replace("<pool>", p) for p in POOLS] if "<pool>" in path else [path]
        if key not in LEAVES:
            yield from value_paths(sub, path)


def lookup(values: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def test_every_chart_value_is_documented() -> None:
    rows = section("Chart values")
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    problems: list[str] = []
    documented = dict(value_paths(schema))
    assert "grafana.dashboard.enabled" in documented and "pools.<pool>.concurrency" in documented
    for path, real in documented.items():
        row = next((r for r in rows if names_in_first_cell(r)[:1] == [path]), None)
        if row is None:
            problems.append(f"{path} has no row")
            continue
        for one in real:
            present, value = lookup(values, one)
            if present:
                check_default(row, one, value, problems)
    problems += [
        f"{n}: documented, but not in values.schema.json"
        for r in rows
        for n in names_in_first_cell(r)[:1]
        if n not in documented
    ]
    assert not problems, "docs/configuration.md, chart values:\n" + "\n".join(problems)
