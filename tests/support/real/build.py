"""Regenerate the real-artifact fixtures with Microsoft's own packages: ``make fixtures``.

``python -m tests.support.real.build [designer] [automl]`` builds (or reuses) each
environment (:mod:`tests.support.real.envs`), runs its builder inside it
(:mod:`tests.support.real.designer_build`, :mod:`tests.support.real.automl_build`), and writes
``tests/fixtures/real/<name>/`` with a ``manifest.json`` naming the recipe hash and the
package versions that made the files. The tests check that the committed fixtures
were made by the current recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.real.envs import HERE, NO_DEPS, ensure_env, recipe_hash

REPO = HERE.parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "real"
BUILDERS = {"designer": HERE / "designer_build.py", "automl": HERE / "automl_build.py"}
#: Packages whose versions the manifest records, per environment.
KEY_PACKAGES = {
    "designer": ("azureml-designer-classic-modules", "azureml-designer-core"),
    "automl": ("azureml-automl-runtime", "azureml-training-tabular", "lightgbm", "mlflow-skinny"),
}
COMMON_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy")


def build(name: str, out: Path) -> dict[str, object]:
    """Build the fixtures of environment ``name`` into ``out`` (replaced whole)."""
    env = ensure_env(name)
    python = env / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix=f"fixtures-{name}-") as tmp:
        subprocess.run([str(python), str(BUILDERS[name]), tmp], check=True)
        versions = json.loads(
            subprocess.run(
                [
                    str(python),
                    "-c",
                    "import json, sys; from importlib.metadata import version; "
                    "print(json.dumps({p: version(p) for p in sys.argv[1:]}))",
                    *KEY_PACKAGES[name],
                    *COMMON_PACKAGES,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        manifest = {
            "environment": name,
            "recipe_hash": recipe_hash(name),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "no_deps": list(NO_DEPS.get(name, ())),
            "packages": versions,
            "cases": sorted(p.name for p in Path(tmp).iterdir() if p.is_dir()),
            "regenerate": f"make fixtures (python -m tests.support.real.build {name})",
        }
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(tmp, out)
    return manifest


def main() -> None:
    """Command line: which environments' fixtures to rebuild (default: all)."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.real.build")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BUILDERS)} (default: all)")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown environment(s) {', '.join(unknown)}; expected {', '.join(BUILDERS)}")
    for name in args.names or list(BUILDERS):
        manifest = build(name, FIXTURES / name)
        print(f"{name}: {len(manifest['cases'])} cases in {FIXTURES / name}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
