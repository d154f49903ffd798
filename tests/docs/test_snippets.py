"""Every command README.md and docs/*.md tell a user to type is accounted for.

Shell blocks (```sh, ```bash, ```console, ...) carry a label after the language (```sh gs-look), and each
label is in SNIPPETS: run by a test (which must read that block by its label), or not run here, for a
reason the page itself states right after the block ("Not run by the tests: ..."). A new shell block
without a label, or with one SNIPPETS does not know, fails here; so does a fence without a language.

Inline commands are checked for what can be checked without running them: every `civic-runner …` parses
with civic-runner's own argument parser, every `make TARGET` is a target of the Makefile, and every
`scripts/…` command names a file that exists and arguments that file knows, and every inline kubectl, helm
or kind verb is in INLINE_VERBS: run by a named test (its command lines or the blocks it reads), or not, and why.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass

import pytest
from civic_runner.cli import build_parser

from tests.docs.markdown import ROOT, fenced_blocks, prose_lines

pytestmark = pytest.mark.unit

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
NOT_RUN_NOTE = "not run by the tests"


@dataclass(frozen=True)
class Run:
    """Run by `test` (a path from the repository's root), which reads the block by its label."""

    test: str


@dataclass(frozen=True)
class NotRun:
    """Not run here; the page says why right after the block."""

    why: str


SNIPPETS: dict[tuple[str, str], Run | NotRun] = {
    ("README.md", "two-commands"): NotRun("`make test` is what runs the tests; `make demo` is run by hand"),
    ("README.md", "make-run-example"): Run("tests/docs/test_readme_example.py"),
    ("README.md", "cluster-quickstart"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/getting-started.md", "gs-secrets"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/getting-started.md", "gs-install"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/getting-started.md", "gs-look"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/getting-started.md", "make-run-pipeline"): Run("tests/docs/test_readme_example.py"),
    ("docs/helm.md", "helm-secrets"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/helm.md", "helm-install"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/helm.md", "helm-monitoring"): NotRun("needs the Prometheus Operator's CRDs, which this machine has not"),
    ("docs/helm.md", "helm-upgrade"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/helm.md", "helm-uninstall"): Run("tests/docs/test_cluster_snippets.py"),
    ("docs/helm.md", "build-images"): Run("tests/images/test_images.py"),
    ("docs/helm.md", "docker-build"): NotRun("the by-hand form of what build-images.sh runs"),
    ("docs/civic-os.md", "civic-os-migrate"): Run("tests/docs/test_console_examples.py"),
    ("docs/operations.md", "ops-budget"): Run("tests/e2e/test_budget.py"),
    ("docs/pgbouncer.md", "pgbouncer-runner"): NotRun("example hosts; test_pgbouncer.py runs runners with both URLs"),
    ("docs/helm.md", "helm-riverui"): NotRun("port-forward is not exercised; test_riverui.py installs the same values"),
}


def shell_blocks() -> list[tuple[str, int, list[str], str]]:
    """(page, line, info words, body) of every shell block of README.md and docs/*.md."""
    return [
        (str(page.relative_to(ROOT)), line, words, body)
        for page in PAGES
        for line, words, body in fenced_blocks(page.read_text())
        if words and words[0] in SHELLS
    ]


def test_every_fence_names_its_language() -> None:
    bare = [
        f"{page.relative_to(ROOT)}:{line}" for page in PAGES for line, words, _ in fenced_blocks(page.read_text())
        if not words
    ]  # fmt: skip
    assert not bare, f"fenced blocks without a language (a shell block must say so, and carry a label): {bare}"


def test_every_shell_block_is_in_the_inventory() -> None:
    found = {}
    for page, line, words, _ in shell_blocks():
        assert len(words) >= 2, f"{page}:{line}: a shell block needs a label (```{words[0]} some-label)"
        assert (page, words[1]) not in found, f"{page}:{line}: label {words[1]} used twice"
        found[(page, words[1])] = line
    unknown = sorted(set(found) - set(SNIPPETS))
    assert not unknown, f"shell blocks SNIPPETS does not classify (run them in a test, or say why not): {unknown}"
    gone = sorted(set(SNIPPETS) - set(found))
    assert not gone, f"SNIPPETS names blocks the docs no longer have: {gone}"


@pytest.mark.parametrize(("page", "label"), sorted(SNIPPETS), ids=lambda v: str(v))
def test_each_block_is_run_or_says_why_not(page: str, label: str) -> None:
    entry = SNIPPETS[(page, label)]
    text = (ROOT / page).read_text()
    if isinstance(entry, Run):
        test = ROOT / entry.test
        assert test.is_file(), entry.test
        source = test.read_text()
        # The test reads the block by its label (tests/docs/), or runs what it runs (the images tier).
        if entry.test.startswith("tests/docs/"):
            assert f'"{label}"' in source, f"{entry.test} does not read the ```{label} block"
        else:
            (_, _, body) = next(b for b in fenced_blocks(text) if label in b[1][1:])
            program = body.split()[0]
            assert program in source, f"{entry.test} does not run {program}"
        assert NOT_RUN_NOTE not in after_block(text, label).lower(), f"{page}: ```{label} is run; the text says not"
    else:
        after = after_block(text, label)
        assert NOT_RUN_NOTE in after.lower(), (
            f"{page}: say right after ```{label} that it is not run by the tests, and why ({entry.why})"
        )


def after_block(text: str, label: str) -> str:
    """The prose after the block labelled `label`, up to the next fenced block or heading."""
    lines = text.splitlines()
    blocks = fenced_blocks(text)
    start = next(line for line, words, body in blocks if label in words[1:])
    end = start + next(b for b in blocks if b[0] == start)[2].count("\n") + 1
    out = []
    for line in lines[end:]:
        if line.lstrip().startswith(("```", "~~~", "#")):
            break
        out.append(line)
    return "\n".join(out)


INLINE = re.compile(r"`([^`]+)`")
PLACEHOLDERS = {"ID": "1", "KIND": "benchmark", "JSON": "{}", "N": "1", "NAME": "x"}


def inline_commands(*starts: str) -> list[tuple[str, int, str]]:
    """(page, line, span) of every inline code span that starts with one of `starts`."""
    return [
        (str(page.relative_to(ROOT)), number, span)
        for page in PAGES
        for number, line in prose_lines(page.read_text(), blank_code=False)
        for span in INLINE.findall(line)
        if span.startswith(starts)
    ]


def synopsis(span: str) -> bool:
    """A usage line (`[--state --queue]`, `a|b`, `…`), not a command to type as it is."""
    return any(mark in span for mark in ("[", "|", "…", "..."))


def test_inline_civic_runner_commands_parse() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    subcommands = set(sub.choices)
    bad = []
    for page, number, span in inline_commands("civic-runner "):
        if synopsis(span):
            continue
        argv = [PLACEHOLDERS.get(w, w) for w in shlex.split(span)[1:]]
        if len(argv) == 1:  # naming a command (`civic-runner enqueue`), not typing it: it must exist
            if argv[0] not in subcommands:
                bad.append(f"{page}:{number}: {span}")
            continue
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse: 0 after --help, 2 on a bad command line
            if exc.code != 0:
                bad.append(f"{page}:{number}: {span}")
        except argparse.ArgumentError:
            bad.append(f"{page}:{number}: {span}")
    assert not bad, f"civic-runner refuses these command lines of the docs: {bad}"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m for line in text.splitlines() for m in re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", line)}


def test_inline_make_targets_exist() -> None:
    targets = makefile_targets()
    bad = [
        f"{page}:{number}: {span}" for page, number, span in inline_commands("make ") if span.split()[1] not in targets
    ]
    assert not bad, f"make targets the Makefile does not have: {bad}"


def test_inline_script_commands_exist() -> None:
    bad = []
    for page, number, span in inline_commands("python scripts/", "scripts/"):
        words = span.split()
        if words[-1].endswith("/"):
            continue  # a directory, not a command
        if words[0] == "python":
            words = words[1:]
        if not words or not words[0].startswith("scripts/"):
            continue
        path = ROOT / words[0]
        if not path.is_file():
            bad.append(f"{page}:{number}: {span} (no such file)")
            continue
        source = path.read_text()
        for arg in (a for w in words[1:] for a in w.split("|")):
            if not arg.startswith("-") and arg not in source:
                bad.append(f"{page}:{number}: {span} ({path.name} knows no {arg!r})")
    assert not bad, bad


def test_scripts_listed_exist() -> None:
    """Every path the docs give under scripts/ exists (a script renamed without the docs fails here)."""
    missing = sorted(
        {
            (str(page.relative_to(ROOT)), m)
            for page in PAGES
            for _, line in prose_lines(page.read_text(), blank_code=False)
            for m in re.findall(r"`(scripts/[\w./-]+)", line)
            if not (ROOT / m).exists()
        }
    )
    assert not missing, missing


# Inline kubectl, helm and kind commands, by verb: where each is run, or why it is not. A verb the docs start
# using that is not here fails (`-n NAMESPACE` before the verb is skipped).
INLINE_VERBS: dict[tuple[str, str], Run | NotRun] = {
    ("kubectl", "get"): Run("tests/docs/test_cluster_snippets.py"),
    ("kubectl", "describe"): Run("tests/docs/test_cluster_snippets.py"),
    ("kubectl", "logs"): Run("tests/docs/test_cluster_snippets.py"),
    ("kubectl", "apply"): Run("tests/docs/test_cluster_snippets.py"),
    ("kubectl", "explain"): Run("tests/docs/test_cluster_snippets.py"),
    ("kubectl", "scale"): Run("tests/e2e/test_operator.py"),
    ("kubectl", "port-forward"): NotRun("the tests reach pods at their address on the real node's bridge"),
    ("kubectl", "delete"): NotRun("`kubectl delete crd` would delete every pool of the shared cluster"),
    ("helm", "install"): Run("tests/docs/test_cluster_snippets.py"),
    ("helm", "test"): Run("tests/docs/test_cluster_snippets.py"),
    ("helm", "upgrade"): Run("tests/docs/test_cluster_snippets.py"),
    ("helm", "uninstall"): Run("tests/docs/test_cluster_snippets.py"),
    ("helm", "template"): Run("tests/chart/test_chart.py"),
    ("helm", "package"): Run("tests/chart/test_chart.py"),
    ("helm", "lint"): Run("tests/chart/test_chart.py"),
    ("kind", "load"): NotRun("kind cannot run here (docs/testing.md, what this machine cannot prove)"),
}


def verb(span: str) -> tuple[str, str] | None:
    words = span.split()
    rest = words[1:]
    while rest[:1] == ["-n"]:
        rest = rest[2:]
    return (words[0], rest[0]) if rest else None


def test_inline_cluster_commands_are_accounted_for() -> None:
    used = {}
    for page, number, span in inline_commands("kubectl ", "helm ", "kind "):
        v = verb(span)
        if v:
            used.setdefault(v, f"{page}:{number}: {span}")
    unknown = {v: where for v, where in used.items() if v not in INLINE_VERBS}
    assert not unknown, f"inline commands INLINE_VERBS does not account for: {unknown}"
    blocks = {(page, words[1]): body for page, _, words, body in shell_blocks() if len(words) > 1}
    for (program, name), entry in INLINE_VERBS.items():
        if isinstance(entry, Run):
            # What the test runs: its own command lines and arguments, and the blocks it reads.
            runs = (ROOT / entry.test).read_text() + "".join(
                blocks.get(key, "") for key, e in SNIPPETS.items() if e == entry
            )
            ran = re.search(rf"\b{program}( -n \S+)? {name}\b", runs) or f'"{name}"' in runs
            assert ran, f"{entry.test} does not run {program} {name}"
