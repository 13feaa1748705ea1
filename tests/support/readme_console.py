"""Execute the README's ``console`` blocks with Sybil and compare what they print.

A block is a sequence of ``$ command`` lines, each followed by the output the README shows
and, when the command fails, ``(exit N)``. Every command runs in ``bash`` in its walk's
folder (a temporary directory), stdout and stderr merged as a terminal shows them, and its
exit code and output must match. What may differ from run to run is matched loosely, and
nothing else:

- a 32-hex run id matches any run id; the first match binds it, and later commands that name
  the README's id run with the real one;
- ``sha256:<64 hex>`` matches any digest; ISO timestamps and ``HH:MM:SS`` match any;
- durations (``11.4 s``, ``28.1s``) match any duration;
- a port after ``127.0.0.1:``/``localhost:`` is replaced by a free one chosen for the walk
  (``--port N`` in a command picks it); other ports match any;
- ``/tmp/`` in commands and outputs is the walk's temporary root;
- a line ``...`` matches any number of lines, a line ending in ``...`` any line with that
  beginning; runs of spaces match any run of spaces.

HTML comments steer the walk without showing in the rendered README:
``<!-- readme-test: walk NAME -->`` starts (or returns to) a walk, whose blocks share one
folder; ``<!-- readme-test: setup NAME -->`` runs the walk's hidden setup (copying the real
fixtures to where the README's paths say, e.g. ``trained_model_outputs/``);
``<!-- readme-test: write FILE -->`` writes the next fenced block into the walk's folder.
A command ending in ``&`` runs in the background until the walk ends; its shown output is
waited for, and a URL it prints is polled on ``/health`` until it answers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

ID = re.compile(r"\b[0-9a-f]{32}\b")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
STAMP = re.compile(
    r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?|\b\d\d:\d\d:\d\d\b|\b\d{4}-\d\d-\d\d\b"
)
DURATION = re.compile(r"\b\d+(?:\.\d+)? ?s\b")
HOSTPORT = re.compile(r"\b(127\.0\.0\.1|localhost):(\d{2,5})\b")
EXIT = re.compile(r"^\(exit (\d+)\)$")
COMMAND_TIMEOUT = 900


@dataclass
class Walk:
    """The state one walk's blocks share: its folder, bound ids and ports, servers."""

    root: Path
    env: dict[str, str]
    setups: dict[str, Callable[[Path], None]]
    ids: dict[str, str] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pending_write: str | None = None

    @property
    def cwd(self) -> Path:
        return self.root / "walk"

    def substitute(self, text: str, paths: bool = True) -> str:
        """The README's literal ids, ports (and /tmp/ paths) made this run's."""
        if paths:  # first: a substituted value (a real path) may itself start with /tmp/
            text = text.replace("/tmp/", f"{self.root}/")
        for readme_id, real in self.ids.items():
            text = text.replace(readme_id, real)
        for readme_port, real in self.ports.items():
            text = re.sub(rf"(?<![\d]){readme_port}(?![\d])", real, text)
        return text

    def stop(self) -> None:
        """End every background command (SIGTERM, then SIGKILL after 10 s)."""
        for proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.background:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass
class Step:
    command: str
    expected: list[str]
    exit_code: int
    line: int


def parse_steps(source: str, first_line: int) -> list[Step]:
    """``$ command`` lines with the output and ``(exit N)`` shown after each."""
    steps: list[Step] = []
    for offset, raw in enumerate(source.splitlines()):
        if raw.startswith("$ "):
            steps.append(Step(raw[2:], [], 0, first_line + offset))
        elif not steps:
            raise ValueError(f"README line {first_line + offset}: output before any '$ ' command")
        elif match := EXIT.match(raw.strip()):
            steps[-1].exit_code = int(match.group(1))
        else:
            steps[-1].expected.append(raw)
    for step in steps:
        while step.expected and not step.expected[-1].strip():
            step.expected.pop()
    return steps


def _squash(line: str) -> str:
    return re.sub(r"\s+", " ", line.strip())


def _line_pattern(expected: str, walk: Walk) -> tuple[re.Pattern[str], list[str]]:
    """A regex for one shown line, and the README ids its groups bind, in order."""
    text = _squash(walk.substitute(expected, paths=False))
    prefix_only = text.endswith("...")
    if prefix_only:
        text = text[:-3]
    bound: list[str] = []
    tokens = re.compile(
        "|".join(
            f"(?P<{n}>{p.pattern})"
            for n, p in (
                ("id", ID),
                ("digest", DIGEST),
                ("stamp", STAMP),
                ("hostport", HOSTPORT),
                ("duration", DURATION),
            )
        )
    )
    out, pos = [], 0
    for match in tokens.finditer(text):
        out.append(re.escape(text[pos : match.start()]).replace(r"\ ", " +"))
        kind = match.lastgroup
        if kind == "id":
            if match.group() in walk.ids.values():
                out.append(re.escape(match.group()))
            else:
                bound.append(match.group())
                out.append(r"([0-9a-f]{32})")
        elif kind == "digest":
            out.append(r"sha256:[0-9a-f]{64}")
        elif kind == "stamp":
            out.append(f"(?:{STAMP.pattern})")
        elif kind == "hostport":
            host, port = match.group().split(":")
            out.append(re.escape(host) + ":" + (port if port in walk.ports.values() else r"\d+"))
        else:
            out.append(f"(?:{DURATION.pattern})")
        pos = match.end()
    out.append(re.escape(text[pos:]).replace(r"\ ", " +"))
    return re.compile("".join(out) + (".*" if prefix_only else "")), bound


def match_output(expected: list[str], actual: list[str], walk: Walk) -> str | None:
    """None when ``actual`` is what ``expected`` shows (binding ids), else why not."""
    actual = [_squash(a) for a in actual]
    while actual and not actual[-1]:
        actual.pop()

    def go(i: int, j: int) -> dict[str, str] | None:
        if i == len(expected):
            return {} if j == len(actual) else None
        if expected[i].strip() == "...":
            for k in range(j, len(actual) + 1):
                found = go(i + 1, k)
                if found is not None:
                    return found
            return None
        if j == len(actual):
            return None
        pattern, bound = _line_pattern(expected[i], walk)
        match = pattern.fullmatch(actual[j])
        if match is None:
            return None
        rest = go(i + 1, j + 1)
        if rest is None:
            return None
        return {**dict(zip(bound, match.groups(), strict=True)), **rest}

    found = go(0, 0)
    if found is None:
        return (
            "output differs\n--- README shows:\n"
            + "\n".join(expected)
            + "\n--- the command printed:\n"
            + "\n".join(actual)
        )
    walk.ids.update(found)
    return None


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _bind_ports(command: str, walk: Walk) -> None:
    for readme_port in re.findall(r"--port[ =](\d+)", command):
        walk.ports.setdefault(readme_port, _free_port())


def _wait_until_healthy(text: str, deadline: float) -> str | None:
    match = re.search(r"http://127\.0\.0\.1:\d+", text)
    if match is None:
        return None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(match.group() + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return None
        except OSError:
            time.sleep(0.5)
    return f"{match.group()}/health did not answer 200 in time"


def run_background(step: Step, walk: Walk) -> str | None:
    """Start ``command &``, wait for the lines it shows and for its /health."""
    _bind_ports(step.command, walk)
    command = walk.substitute(step.command).rstrip().rstrip("&")
    log = walk.root / f"background-{len(walk.background)}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=walk.cwd,
            env=walk.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    walk.background.append(proc)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        if len(lines) >= len(step.expected) or proc.poll() is not None:
            break
        time.sleep(0.2)
    lines = log.read_text().replace(str(walk.root) + "/", "/tmp/").splitlines()
    if proc.poll() is not None:
        return f"README line {step.line}: `{step.command}` exited {proc.returncode}:\n" + "\n".join(
            lines
        )
    problem = match_output(step.expected, lines[: len(step.expected)], walk)
    if problem:
        return f"README line {step.line}: `{step.command}`: {problem}"
    return _wait_until_healthy("\n".join(lines), deadline)


def run_step(step: Step, walk: Walk) -> str | None:
    """Run one command; None when its exit code and output are what the README shows."""
    if step.command.rstrip().endswith("&"):
        return run_background(step, walk)
    _bind_ports(step.command, walk)
    proc = subprocess.run(
        ["bash", "-c", walk.substitute(step.command)],
        cwd=walk.cwd,
        env=walk.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    printed = proc.stdout.decode("utf-8", "replace").replace(str(walk.root) + "/", "/tmp/")
    where = f"README line {step.line}: `{step.command}`"
    if proc.returncode != step.exit_code:
        return f"{where} exited {proc.returncode}, the README shows {step.exit_code}:\n{printed}"
    problem = match_output(step.expected, printed.splitlines(), walk)
    return f"{where}: {problem}" if problem else None


class _WalkParser:
    """Sybil parser: directives and the fenced blocks they steer, console blocks."""

    def __init__(self) -> None:
        self.directives = DirectiveInHTMLCommentLexer("readme-test")
        self.any_block = FencedCodeBlockLexer(r"[a-z]*")

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in self.directives(document):
            region.parsed = region.lexemes["arguments"].strip()
            region.evaluator = _directive
            yield region
        for region in self.any_block(document):
            if region.lexemes["language"] == "console":
                region.parsed = region.lexemes["source"]
                region.evaluator = _console
            else:
                region.parsed = region.lexemes["source"]
                region.evaluator = _other_block
            yield region


def _selected(example: Example) -> Walk | None:
    namespace: dict[str, Any] = example.namespace
    if namespace.get("current") != namespace["selected"]:
        return None
    walk: Walk = namespace["walk"]
    return walk


def _directive(example: Example) -> str | None:
    verb, _, argument = str(example.parsed).partition(" ")
    if verb == "walk":
        example.namespace["current"] = argument
        return None
    walk = _selected(example)
    if walk is None:
        return None
    if verb == "setup":
        walk.setups[argument](walk.cwd)
    elif verb == "write":
        walk.pending_write = argument
    else:
        return f"README line {example.line}: unknown readme-test directive {verb!r}"
    return None


def _other_block(example: Example) -> str | None:
    walk = _selected(example)
    if walk is not None and walk.pending_write:
        (walk.cwd / walk.pending_write).write_text(str(example.parsed))
        walk.pending_write = None
    return None


def _console(example: Example) -> str | None:
    walk = _selected(example)
    if walk is None:
        return None
    first_line = example.line + 1
    for step in parse_steps(str(example.parsed), first_line):
        problem = run_step(step, walk)
        if problem:
            return problem
    return None


SYBIL = Sybil(parsers=[_WalkParser()])


def walks(readme: Path) -> list[str]:
    """The walk names the README's directives start, in order of first appearance."""
    names = re.findall(r"<!-- readme-test: walk (\S+) -->", readme.read_text())
    return list(dict.fromkeys(names))


def run_walk(readme: Path, name: str, walk: Walk) -> None:
    """Evaluate every block of walk ``name`` in README order; raises on the first failure."""
    walk.cwd.mkdir(parents=True, exist_ok=True)
    document = SYBIL.parse(readme)
    document.namespace.update(selected=name, walk=walk)
    try:
        for example in document.examples():
            example.evaluate()
    finally:
        walk.stop()
