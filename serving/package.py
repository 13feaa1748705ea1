"""``lifecycle package``: a registered version as a self-contained build context that
installs with no network and serves (issue #19).

Layout of ``DIR``::

    Dockerfile        non-root, HEALTHCHECK on /health, the server as PID 1 (SIGTERM reaches
                      it), the warm-start cache filled at build time, serve options as ENV
    model/            the MLflow model, checked against the version's content digest
    requirements.txt  every package pinned (name==version), the toolkit included
    wheelhouse/       a wheel for each line of requirements.txt (the toolkit's own too)
    env/              only for a model that runs in its own environment (AutoML): that
                      environment's wheels, installed offline by ``lifecycle env prepare``
    manifest.json     model URI, name, version, digest, Python, packages, image

so that ``pip install --no-index --find-links DIR/wheelhouse -r DIR/requirements.txt`` and
then ``lifecycle serve DIR/model`` work on a machine with no network. The versions pinned
are this environment's (the ones the toolkit was tested with here), so the wheelhouse is
for this Python and platform; the manifest says which.

The context is written beside ``DIR`` and renamed into place at the end: a failure leaves
nothing that looks like a package. Building an image is :mod:`serving.image`'s business.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lifecycle.base.errors import PackagingError
from lifecycle.base.workspaces import Workspace

logger = logging.getLogger(__name__)

DIST_NAME = "mlflow-lifecycle"
MANIFEST = "manifest.json"
#: Where the context's files go inside the image.
IMAGE_ROOT = "/opt/lifecycle"
DEFAULT_PORT = 8080
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass
class PackageResult:
    """What ``lifecycle package`` made."""

    out: str
    model_uri: str
    name: str | None
    version: str | None
    digest: str
    packages: int
    wheelhouse_bytes: int
    env: str | None = None
    image: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return dict(self.__dict__)


def default_base() -> str:
    """The base image whose Python matches the wheelhouse's (``python:3.X-slim``)."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def package_model(
    ws: Workspace,
    model_uri: str,
    out: str | Path,
    *,
    image: str | None = None,
    base: str | None = None,
    log: Callable[[str], None] = logger.info,
) -> PackageResult:
    """Write the build context of ``model_uri`` (resolved in ``ws``) to ``out``.

    Raises:
        PackagingError: ``out`` is not empty, the files do not match the version's digest,
            or pip cannot gather a wheel (its last lines are in the message).
        ModelNotFoundError, UntrustedPickleError, RestrictedVersionError: as for serving.
    """
    from lifecycle.base.digest import model_digest
    from lifecycle.base.fetch import fetch_model

    t0 = time.monotonic()
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackagingError(f"--out '{out}' is not empty; expected a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="lifecycle-package-") as dl:
            fetched = fetch_model(
                ws, model_uri, dl, in_place=True, digest=True, error=PackagingError,
                restricted_action="deploy",
            )  # fmt: skip
            shutil.copytree(
                fetched.path, tmp / "model", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        digest = model_digest(tmp / "model")
        if fetched.digest is not None and digest != fetched.digest:
            raise PackagingError(
                f"The files of {model_uri} have digest {digest[:19]}…, the version says "
                f"{fetched.digest[:19]}…: refusing to package files that are not the version's"
            )
        resolved = fetched.resolved
        log(f"model {model_uri} -> version {resolved.version} ({digest[:19]}…), files verified")
        wheels = tmp / "wheelhouse"
        wheels.mkdir()
        toolkit = toolkit_wheel(wheels)
        log(f"toolkit wheel {toolkit.name}")
        from lifecycle.base.envs import choose_env_manager

        spec = choose_env_manager(tmp / "model", "auto")
        # A model with its own environment gets its requirements there (env/wheelhouse):
        # they may conflict with the toolkit's (AutoML pins pandas 1.5.3).
        model_reqs = [] if spec is not None else _model_requirements(tmp / "model")
        log(f"gathering wheels for the toolkit and {len(model_reqs)} model requirement(s)")
        _pip_wheel(sys.executable, wheels, [str(toolkit), *model_reqs], constraints=tmp)
        pins = pins_of(wheels)
        (tmp / "requirements.txt").write_text(
            "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())), encoding="utf-8"
        )
        env = None if spec is None else _env_wheels(tmp, spec, log)
        consent = _needs_consent(tmp / "model", fetched.consent)
        manifest = {
            "format": 1,
            "model_uri": model_uri,
            "name": resolved.name,
            "version": resolved.version,
            "workspace": ws.name,
            "source": resolved.source,
            "digest": digest,
            "digest_verified": fetched.digest is not None,
            "pickle_consent": consent,
            "python": platform.python_version(),
            "platform": sysconfig.get_platform(),
            "toolkit": pins.get(DIST_NAME),
            "packages": pins,
            "env": env,
            "image": image,
            "base": base or default_base(),
            "port": DEFAULT_PORT,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (tmp / "Dockerfile").write_text(dockerfile(manifest), encoding="utf-8")
        size = sum(p.stat().st_size for p in tmp.rglob("*.whl"))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PackageResult(
        out=str(out),
        model_uri=model_uri,
        name=resolved.name,
        version=None if resolved.version is None else str(resolved.version),
        digest=digest,
        packages=len(pins),
        wheelhouse_bytes=size,
        env=env["name"] if env else None,
        image=image,
        seconds=round(time.monotonic() - t0, 1),
    )


def read_manifest(context: str | Path) -> dict[str, Any]:
    """The manifest of a build context.

    Raises:
        PackagingError: ``context`` holds no readable manifest.json.
    """
    path = Path(context) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackagingError(
            f"'{context}' is not a package made by `lifecycle package` (no readable "
            f"{MANIFEST}: {exc})"
        ) from None
    if not isinstance(data, dict):
        raise PackagingError(f"'{path}' is not a JSON object")
    return data


def toolkit_wheel(dest: Path) -> Path:
    """A wheel of the installed toolkit in ``dest``: built from its source folder when it is
    installed editable, else re-packed from the installed files (their RECORD)."""
    dist = metadata.distribution(DIST_NAME)
    direct = dist.read_text("direct_url.json")
    info = json.loads(direct) if direct else {}
    if info.get("dir_info", {}).get("editable") and str(info.get("url", "")).startswith("file:"):
        from urllib.parse import unquote, urlparse

        src = unquote(urlparse(info["url"]).path)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dest)]
        cmd += ["--disable-pip-version-check", src]
        if importlib.util.find_spec("setuptools") is not None:
            cmd.insert(4, "--no-build-isolation")  # no download of a build backend
        _run(cmd, f"build the toolkit's wheel from {src}")
        found = sorted(dest.glob("mlflow_lifecycle-*.whl"))
        if not found:
            raise PackagingError(f"pip built no mlflow_lifecycle wheel from {src}")
        return found[-1]
    return _repack(dist, dest)


def _repack(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel made from an installed distribution's files (as listed in its RECORD)."""
    import base64
    import hashlib
    import zipfile

    files = [f for f in dist.files or [] if f.suffix != ".pyc" and "__pycache__" not in f.parts]
    name = dist.metadata["Name"].replace("-", "_")
    version = dist.version
    path = dest / f"{name}-{version}-py3-none-any.whl"
    record_name = f"{name}-{version}.dist-info/RECORD"
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            rel = str(f)
            if rel.startswith("..") or rel.endswith(("RECORD", "INSTALLER", "direct_url.json")):
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            zf.writestr(rel, data)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{rel},sha256={sha},{len(data)}")
        rows.append(f"{record_name},,")
        zf.writestr(record_name, "\n".join(rows) + "\n")
    return path


def pins_of(wheelhouse: Path) -> dict[str, str]:
    """name -> version of each wheel in ``wheelhouse`` (names normalized as pip does)."""
    pins = {}
    for whl in wheelhouse.glob("*.whl"):
        m = _WHEEL.match(whl.name)
        if m:
            pins[re.sub(r"[-_.]+", "-", m["name"]).lower()] = m["version"]
    return pins


def _model_requirements(model: Path) -> list[str]:
    """The model's own requirements (``requirements.txt`` lines that name a package)."""
    path = model / "requirements.txt"
    if not path.is_file():
        return []
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("-")]


def _constraints(folder: Path) -> Path:
    """This environment's versions as pip constraints (so the image runs what ran here)."""
    lines = []
    # Only what is installed (a vendoring package may put its own copies on sys.path).
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for dist in metadata.distributions(path=paths):
        name = dist.metadata["Name"]
        if not name or name.lower() == DIST_NAME:
            continue
        lines.append(f"{name}=={dist.version}")
    path = folder / ".constraints.txt"
    path.write_text("\n".join(sorted(set(lines))) + "\n", encoding="utf-8")
    return path


def _pip_wheel(python: str, dest: Path, args: list[str], *, constraints: Path | None) -> None:
    cmd = [python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    cmd += ["--prefer-binary", "-w", str(dest)]
    if constraints is not None:
        file = _constraints(constraints)
        cmd += ["-c", str(file)]
    try:
        _run([*cmd, *args], "pip wheel " + " ".join(Path(a).name for a in args))
    finally:
        if constraints is not None:
            (constraints / ".constraints.txt").unlink(missing_ok=True)


def _env_wheels(ctx: Path, spec: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """For a model that runs in its own environment (``spec``): that environment's wheels in
    ``ctx/env/wheelhouse`` (gathered with the environment's own pip, step by step)."""
    from lifecycle.base.envs import ENV_DIR, env_python, prepare_env

    log(f"the model runs in its own environment '{spec.name}': gathering its wheels")
    env = prepare_env(spec, log=log)
    python = str(env_python(spec))
    wheels = ctx / "env" / "wheelhouse"
    wheels.mkdir(parents=True)
    files = Path(env) / ENV_DIR  # the spec's files, as the environment was built from them
    steps = [s for s in spec.steps if s]
    for i, step in enumerate(steps, 1):
        args = [str(files / a) if a in spec.files else a for a in step]
        log(f"  env step {i}/{len(steps)}: pip wheel {' '.join(step)}")
        _pip_wheel(python, wheels, args, constraints=None)
    # The worker's own needs, at the versions the built environment has.
    probe = subprocess.run(
        [python, "-c", "import importlib.metadata as m; "
         "print(*(f'{d}=={m.version(d)}' for d in ('pyarrow', 'pandas')))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    _pip_wheel(python, wheels, probe.stdout.split(), constraints=None)
    return {"name": spec.name, "digest": spec.digest(), "wheels": len(list(wheels.glob("*")))}


def _needs_consent(model: Path, recorded: str | None) -> bool:
    """True when serving the files unpickles and the version carries the user's consent
    (the image then starts with ``LIFECYCLE_TRUST_PICKLE=1``)."""
    from lifecycle.base.consent import unpickling_reason

    return bool(recorded) and unpickling_reason(model) is not None


def dockerfile(manifest: dict[str, Any]) -> str:
    """The Dockerfile of a context described by ``manifest``."""
    root = IMAGE_ROOT
    port = int(manifest.get("port") or DEFAULT_PORT)
    env_lines = [
        "PYTHONDONTWRITEBYTECODE=1",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"PATH={root}/venv/bin:$PATH",
        f"LIFECYCLE_CACHE_DIR={root}/cache",
        f"LIFECYCLE_ENV_CACHE={root}/envs",
        "LIFECYCLE_SERVE_HOST=0.0.0.0",
        f"LIFECYCLE_SERVE_PORT={port}",
        "LIFECYCLE_SERVE_WORKERS=1",
        "LIFECYCLE_SERVE_TIMEOUT=60",
        f"LIFECYCLE_SERVE_MODEL_NAME={_env_value(manifest.get('name') or 'model')}",
    ]
    if manifest.get("version") is not None:
        env_lines.append(f"LIFECYCLE_SERVE_MODEL_VERSION={_env_value(manifest['version'])}")
    if manifest.get("pickle_consent"):
        env_lines.append("LIFECYCLE_TRUST_PICKLE=1")
    env_block = " \\\n    ".join(env_lines)
    env_steps = ""
    if manifest.get("env"):
        env_steps = (
            "RUN --mount=type=bind,source=env/wheelhouse,target=/tmp/env-wheelhouse \\\n"
            f"    lifecycle env prepare {root}/model --find-links /tmp/env-wheelhouse\n"
        )
    return f"""# syntax=docker/dockerfile:1
# Made by `lifecycle package` for {manifest.get("model_uri")} (version \
{manifest.get("version")}, {str(manifest.get("digest"))[:19]}…).
# Build: buildah bud -t IMAGE .   (or: podman build -t IMAGE .; docker build -t IMAGE .)
# The wheelhouse is for Python {manifest.get("python")} on {manifest.get("platform")}: the base
# image must have that Python (python3 with venv).
ARG BASE={manifest.get("base") or default_base()}
FROM ${{BASE}}
ENV {env_block}
LABEL org.opencontainers.image.title={_env_value(manifest.get("name") or "model")} \\
      org.opencontainers.image.version={_env_value(manifest.get("version") or "")} \\
      io.mlflow-lifecycle.model-uri={_env_value(manifest.get("model_uri"))} \\
      io.mlflow-lifecycle.digest={_env_value(manifest.get("digest"))}
RUN (getent group lifecycle >/dev/null || groupadd --system lifecycle) \\
 && (id lifecycle >/dev/null 2>&1 || useradd --system --gid lifecycle --no-create-home \\
      --home-dir {root} --shell /usr/sbin/nologin lifecycle) \\
 && mkdir -p {root}/cache {root}/envs
COPY requirements.txt {root}/requirements.txt
# The wheelhouse is mounted for this step only: no layer keeps it.
RUN --mount=type=bind,source=wheelhouse,target=/tmp/wheelhouse \\
    python3 -m venv {root}/venv \\
 && {root}/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse \\
      -r {root}/requirements.txt
COPY model/ {root}/model/
COPY manifest.json {root}/manifest.json
{env_steps}RUN lifecycle serve {root}/model --prepare-only \\
 && chown -R lifecycle:lifecycle {root}/cache {root}/envs
USER lifecycle
WORKDIR {root}
EXPOSE {port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LIFECYCLE_SERVE_PORT', '{port}'), timeout=3)"]
STOPSIGNAL SIGTERM
# Exec form: the server is PID 1 and gets SIGTERM itself (it finishes in-flight requests).
ENTRYPOINT ["{root}/venv/bin/lifecycle", "serve", "{root}/model"]
"""


def _env_value(value: Any) -> str:
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_.:/@+-]+", text):
        return text
    return json.dumps(text)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise PackagingError(f"packaging failed at `{what}`: {tail}")
