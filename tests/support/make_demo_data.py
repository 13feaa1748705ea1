"""Regenerate the demo's shipped Designer and AutoML sample artifacts
(``lifecycle/cli/demo_data/``): ``make demo-data``.

The demo must run from an installed wheel, so it cannot build these with the test suite's
builders at run time; it copies these files instead. Designer: the real binary logistic
regression made by Designer's own modules (``tests/fixtures/real/designer/binary_logreg``,
rebuilt by ``make fixtures``). AutoML: still the imitation that ``tests/support/origins.py``
builds, until issue #14's real AutoML fixtures exist.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.origins import build_automl_outputs  # noqa: E402

DEST = ROOT / "lifecycle" / "cli" / "demo_data"
REAL_DESIGNER = ROOT / "tests" / "fixtures" / "real" / "designer" / "binary_logreg"


def main() -> None:
    """Rebuild ``demo_data/{designer,automl}``: the artifact folder and ``holdout.parquet``."""
    import tempfile

    dest = DEST / "designer"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(REAL_DESIGNER / "trained_model_outputs", dest / "trained_model_outputs")
    shutil.copy2(REAL_DESIGNER / "holdout.parquet", dest / "holdout.parquet")
    print(f"wrote {dest}")
    with tempfile.TemporaryDirectory() as tmp:
        automl = build_automl_outputs(Path(tmp) / "automl")
        dest = DEST / "automl"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        shutil.copytree(automl.path, dest / automl.path.name)
        automl.holdout.to_parquet(dest / "holdout.parquet", index=False)
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
