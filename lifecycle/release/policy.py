"""``release.yaml``: the declarative release policy, read and validated.

Per model: the ``source`` workspace; ordered ``hops`` (each a promotion into another
workspace, with gates, an optional holdout comparison, ``approval``, ``soak`` and ``when``);
scheduled ``batch`` jobs and ``monitors``; and ``restrict`` (which flags and what age make a
version unfit to serve or score). Every error is one line naming the file, the line and the
key, raised as :class:`ReleaseFileError` (exit code 2).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lifecycle.base.errors import ConfigError, InvalidArgumentError
from lifecycle.base.workspaces import Config

__all__ = [
    "BatchJob",
    "Holdout",
    "Hop",
    "ModelPolicy",
    "Monitor",
    "ReleaseFileError",
    "ReleasePolicy",
    "Restrict",
    "load_policy",
    "parse_duration",
]

RESTRICT_FLAGS = ("needs_retraining", "drift", "archived")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STAGES = ("Staging", "Production", "Archived", "None")


class ReleaseFileError(ConfigError):
    """``release.yaml`` is invalid (one line: file, line, key, what was expected)."""

    exit_code = 2


def parse_duration(text: str) -> float:
    """Seconds in ``24h``, ``90d``, ``30m``, ``2w``, ``45s``.

    Raises:
        ValueError: anything else.
    """
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"'{text}' is not a duration such as 30m, 24h, 90d or 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Holdout:
    data: str
    target: str
    metric: str | None = None
    min_delta: float = 0.0


@dataclass(frozen=True)
class Hop:
    """One promotion step: from the previous hop's workspace (or the source) into ``to``."""

    name: str
    to: str
    stage: str | None
    alias: str | None
    gates: tuple[str, ...] = ()
    holdout: Holdout | None = None
    approval: str = "none"
    soak_s: float = 0.0
    soak: str | None = None
    when: str = "new-version"


@dataclass(frozen=True)
class AzureBatch:
    """Where ``release export --to azure-ml`` sends a batch job: an Azure ML batch endpoint."""

    endpoint: str
    input: str
    compute: str
    deployment: str | None = None
    input_type: str = "uri_folder"


@dataclass(frozen=True)
class BatchJob:
    name: str
    workspace: str
    model: str
    input: str
    output: str
    schedule: str
    options: dict[str, Any] = field(default_factory=dict)
    azure: AzureBatch | None = None


@dataclass(frozen=True)
class Monitor:
    name: str
    workspace: str
    model: str
    input: str
    schedule: str
    policy: str | None = None


@dataclass(frozen=True)
class Restrict:
    flags: tuple[str, ...] = ()
    stale_after_s: float | None = None
    stale_after: str | None = None


@dataclass(frozen=True)
class ModelPolicy:
    name: str
    source: str
    hops: tuple[Hop, ...]
    batch: tuple[BatchJob, ...] = ()
    monitors: tuple[Monitor, ...] = ()
    restrict: Restrict = Restrict()

    def hop_index(self, hop: str) -> int:
        """The position of hop ``hop`` in :attr:`hops`.

        Raises:
            InvalidArgumentError: the model has no hop of that name.
        """
        for i, h in enumerate(self.hops):
            if h.name == hop:
                return i
        raise InvalidArgumentError(
            f"Unknown hop '{hop}' for {self.name}; expected one of "
            f"{', '.join(h.name for h in self.hops)}"
        )


@dataclass(frozen=True)
class ReleasePolicy:
    """The whole file: its models, where it was read from and its sha256 (for the audit)."""

    path: str
    digest: str
    models: tuple[ModelPolicy, ...]

    def model(self, name: str) -> ModelPolicy:
        for m in self.models:
            if m.name == name:
                return m
        raise ReleaseFileError(
            f"{self.path}: no model '{name}' (it names {', '.join(m.name for m in self.models)})"
        )


class _Map(dict):  # type: ignore[type-arg]
    """A mapping that remembers the line of each key (1-based) and its own."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    out = _Map(loader.construct_mapping(node, deep=True))
    out.line = node.start_mark.line + 1
    out.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


class _Reader:
    """Typed access to one mapping, with errors that name the file, line and key path."""

    def __init__(self, path: str, data: Any, where: str, line: int) -> None:
        self.path, self.where, self.line = path, where, line
        if not isinstance(data, dict):
            self.fail(where, f"expected a mapping, got {_kind(data)}")
        self.data: dict[str, Any] = data

    def fail(self, key: str, what: str, line: int | None = None) -> None:
        raise ReleaseFileError(f"{self.path}:{line or self.line}: {key}: {what}")

    def key_line(self, key: str) -> int:
        return getattr(self.data, "key_lines", {}).get(key, self.line)

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail(
                    f"{self.where}.{key}",
                    f"unknown key; expected one of {', '.join(allowed)}",
                    self.key_line(str(key)),
                )

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail(f"{self.where}.{key}", "missing")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            value = None  # yaml's true/false are not numbers
        if value is None or not isinstance(value, kind):
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            self.fail(
                f"{self.where}.{key}",
                f"expected {names}, got {_kind(self.data[key])}",
                self.key_line(key),
            )
        return value

    def child(self, key: str, value: Any, where: str) -> _Reader:
        return _Reader(self.path, value, where, getattr(value, "line", self.key_line(key)))


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]


def load_policy(path: str | Path, config: Config) -> ReleasePolicy:
    """Read and validate ``path`` against the workspaces of ``config``.

    Raises:
        ReleaseFileError: the file is missing, not YAML, or breaks the schema (one line
            naming the file, line and key).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ReleaseFileError(f"{p}: cannot read the release file: {exc.strerror}") from exc
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_Loader)  # a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ReleaseFileError(f"{p}{line}: not valid YAML: {problem}".splitlines()[0]) from exc
    top = _Reader(str(p), data if data is not None else {}, "release", 1)
    top.check_keys(("models",))
    models_raw = top.get("models", dict, required=True)
    if not models_raw:
        top.fail("models", "expected at least one model", top.key_line("models"))
    names = set(config.workspaces)
    models = []
    for name, body in models_raw.items():
        r = top.child(str(name), body, f"models.{name}")
        models.append(_model(r, str(name), names))
    return ReleasePolicy(str(p), hashlib.sha256(raw).hexdigest(), tuple(models))


def _workspace(r: _Reader, key: str, names: set[str]) -> str:
    ws = str(r.get(key, str, required=True))
    if ws not in names:
        r.fail(
            f"{r.where}.{key}",
            f"unknown workspace '{ws}'; expected one of {', '.join(sorted(names))}",
            r.key_line(key),
        )
    return ws


def _schedule(r: _Reader) -> str:
    from croniter import croniter

    text = str(r.get("schedule", str, required=True))
    if not croniter.is_valid(text):
        r.fail(
            f"{r.where}.schedule",
            f"'{text}' is not a cron expression such as '0 2 * * *'",
            r.key_line("schedule"),
        )
    return text


def _model(r: _Reader, name: str, names: set[str]) -> ModelPolicy:
    r.check_keys(("source", "hops", "batch", "monitors", "restrict"))
    source = _workspace(r, "source", names)
    hops: list[Hop] = []
    previous = source
    for i, body in enumerate(r.get("hops", list, [])):
        hop = _hop(r.child("hops", body, f"{r.where}.hops[{i}]"), names)
        if hop.to == previous:
            r.fail(
                f"{r.where}.hops[{i}].to",
                f"'{hop.to}' is the workspace the hop starts from",
                getattr(body, "key_lines", {}).get("to", r.line),
            )
        if hop.name in {h.name for h in hops}:
            r.fail(f"{r.where}.hops[{i}].name", f"'{hop.name}' names two hops")
        hops.append(hop)
        previous = hop.to
    batch = tuple(
        _batch(r.child("batch", body, f"{r.where}.batch[{i}]"), names)
        for i, body in enumerate(r.get("batch", list, []))
    )
    monitors = tuple(
        _monitor(r.child("monitors", body, f"{r.where}.monitors[{i}]"), names)
        for i, body in enumerate(r.get("monitors", list, []))
    )
    jobs = [j.name for j in batch] + [m.name for m in monitors]
    for job in jobs:
        if jobs.count(job) > 1:
            r.fail(
                f"{r.where}", f"the job name '{job}' is used twice (batch and monitors share names)"
            )
    restrict = Restrict()
    if "restrict" in r.data:
        restrict = _restrict(r.child("restrict", r.data["restrict"], f"{r.where}.restrict"))
    return ModelPolicy(name, source, tuple(hops), batch, monitors, restrict)


def _hop(r: _Reader, names: set[str]) -> Hop:
    r.check_keys(("name", "to", "stage", "alias", "gates", "holdout", "approval", "soak", "when"))
    stage = r.get("stage", str)
    if stage is not None and stage.capitalize() not in _STAGES:
        r.fail(
            f"{r.where}.stage",
            f"'{stage}' is not a stage; expected one of {', '.join(_STAGES)}",
            r.key_line("stage"),
        )
    alias = r.get("alias", str)
    if stage is None and alias is None:
        r.fail(r.where, "a hop needs a stage, an alias or both")
    gates = r.get("gates", list, [])
    from lifecycle.registry.gates import parse_gate

    for g in gates:
        try:
            parse_gate(str(g))
        except Exception as exc:
            r.fail(f"{r.where}.gates", str(exc), r.key_line("gates"))
    holdout = None
    if "holdout" in r.data:
        h = r.child("holdout", r.data["holdout"], f"{r.where}.holdout")
        h.check_keys(("data", "target", "metric", "min_delta"))
        holdout = Holdout(
            str(h.get("data", str, required=True)),
            str(h.get("target", str, required=True)),
            h.get("metric", str),
            float(h.get("min_delta", (int, float), 0.0)),
        )
    approval = str(r.get("approval", str, "none"))
    if approval not in ("required", "none"):
        r.fail(
            f"{r.where}.approval",
            f"'{approval}'; expected required or none",
            r.key_line("approval"),
        )
    when = str(r.get("when", str, "new-version"))
    if when not in ("new-version", "manual"):
        r.fail(f"{r.where}.when", f"'{when}'; expected new-version or manual", r.key_line("when"))
    soak = r.get("soak", str)
    soak_s = 0.0
    if soak is not None:
        try:
            soak_s = parse_duration(soak)
        except ValueError as exc:
            r.fail(f"{r.where}.soak", str(exc), r.key_line("soak"))
    return Hop(
        name=str(r.get("name", str, required=True)),
        to=_workspace(r, "to", names),
        stage=stage.capitalize() if stage else None,
        alias=alias,
        gates=tuple(str(g) for g in gates),
        holdout=holdout,
        approval=approval,
        soak_s=soak_s,
        soak=soak,
        when=when,
    )


def _batch(r: _Reader, names: set[str]) -> BatchJob:
    r.check_keys(("name", "workspace", "model", "input", "output", "schedule", "options", "azure"))
    output = str(r.get("output", str, required=True))
    bad = set(re.findall(r"{([^}]*)}", output)) - {"date", "time", "slot"}
    if bad:
        r.fail(
            f"{r.where}.output",
            f"unknown placeholder(s) {sorted(bad)}; expected {{date}}, {{time}} or {{slot}}",
            r.key_line("output"),
        )
    options = r.get("options", dict, {})
    allowed = ("workers", "chunk_rows", "max_error_rate", "delimiter", "keep_columns", "keep_all")
    for key in options:
        if key not in allowed:
            r.fail(
                f"{r.where}.options.{key}",
                f"unknown option; expected one of {', '.join(allowed)}",
                r.key_line("options"),
            )
    azure = None
    if "azure" in r.data:
        a = r.child("azure", r.data["azure"], f"{r.where}.azure")
        a.check_keys(("endpoint", "deployment", "input", "input_type", "compute"))
        input_type = str(a.get("input_type", str, "uri_folder"))
        if input_type not in ("uri_folder", "uri_file"):
            a.fail(
                f"{a.where}.input_type",
                f"'{input_type}'; expected uri_folder or uri_file",
                a.key_line("input_type"),
            )
        azure = AzureBatch(
            endpoint=str(a.get("endpoint", str, required=True)),
            input=str(a.get("input", str, required=True)),
            compute=str(a.get("compute", str, required=True)),
            deployment=a.get("deployment", str),
            input_type=input_type,
        )
    return BatchJob(
        azure=azure,
        name=str(r.get("name", str, required=True)),
        workspace=_workspace(r, "workspace", names),
        model=str(r.get("model", str, required=True)),
        input=str(r.get("input", str, required=True)),
        output=output,
        schedule=_schedule(r),
        options=dict(options),
    )


def _monitor(r: _Reader, names: set[str]) -> Monitor:
    r.check_keys(("name", "workspace", "model", "input", "schedule", "policy"))
    return Monitor(
        name=str(r.get("name", str, required=True)),
        workspace=_workspace(r, "workspace", names),
        model=str(r.get("model", str, required=True)),
        input=str(r.get("input", str, required=True)),
        schedule=_schedule(r),
        policy=r.get("policy", str),
    )


def _restrict(r: _Reader) -> Restrict:
    r.check_keys(("flags", "stale_after"))
    flags = [str(f) for f in r.get("flags", list, [])]
    for f in flags:
        if f not in RESTRICT_FLAGS:
            r.fail(
                f"{r.where}.flags",
                f"unknown flag '{f}'; expected {', '.join(RESTRICT_FLAGS)}",
                r.key_line("flags"),
            )
    stale = r.get("stale_after", str)
    stale_s = None
    if stale is not None:
        try:
            stale_s = parse_duration(stale)
        except ValueError as exc:
            r.fail(f"{r.where}.stale_after", str(exc), r.key_line("stale_after"))
    return Restrict(tuple(flags), stale_s, stale)
