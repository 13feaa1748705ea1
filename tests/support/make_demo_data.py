"""Regenerate the demo's shipped Designer and AutoML sample artifacts
(``lifecycle/cli/demo-data/``): ``make demo-data``.

The demo must run from an installed wheel, so it cannot build these with the test suite's
builders at run time; it copies these files instead. Designer: the real binary logistic
regression made by Designer's own modules (``tests/fixtures/real/designer/binary_logreg``,
rebuilt by ``make fixtures``). AutoML: the real LightGBM classifier behind AutoML's
DataTransformer made by AutoML's own classes (``tests/fixtures/real/automl/
classification_lightgbm``): its ``outputs/`` folder and hold-out rows.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEST = ROOT / "lifecycle" / "cli" / "demo-data"
REAL_DESIGNER = ROOT / "tests" / "fixtures" / "real" / "designer" / "binary_logreg"
REAL_AUTOML = ROOT / "tests" / "fixtures" / "real" / "automl" / "classification_lightgbm"


def main() -> None:
    """Rebuild ``demo-data/{designer,automl}``: the artifact folder and ``holdout.parquet``."""
    import pandas as pd

    dest = DEST / "designer"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(REAL_DESIGNER / "trained_model_outputs", dest / "trained_model_outputs")
    shutil.copy2(REAL_DESIGNER / "holdout.parquet", dest / "holdout.parquet")
    print(f"wrote {dest}")
    dest = DEST / "automl"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(REAL_AUTOML / "outputs", dest / "outputs")
    # Read as AutoML's own outputs were computed (pd.read_csv: a missing text is NaN).
    pd.read_csv(REAL_AUTOML / "holdout.csv").to_parquet(dest / "holdout.parquet", index=False)
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
