"""Regenerate the demo's shipped Designer and AutoML sample artifacts
(``lifecycle/cli/demo_data/``): ``make demo-data``.

The demo must run from an installed wheel, so it cannot build these with the test suite's
builders at run time; it copies these files instead. They are the same imitations of the
Designer and AutoML layouts that ``tests/origins.py`` builds (issue #14 replaces both with
artifacts made by Microsoft's own packages).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.origins import build_automl_outputs, build_designer  # noqa: E402

DEST = ROOT / "lifecycle" / "cli" / "demo_data"


def main() -> None:
    """Rebuild ``demo_data/{designer,automl}``: the artifact folder and ``holdout.parquet``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        designer = build_designer(Path(tmp) / "designer", "binary")
        automl = build_automl_outputs(Path(tmp) / "automl")
        for kind, built in (("designer", designer), ("automl", automl)):
            dest = DEST / kind
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            shutil.copytree(built.path, dest / built.path.name)
            built.holdout.to_parquet(dest / "holdout.parquet", index=False)
            print(f"wrote {dest}")


if __name__ == "__main__":
    main()
