"""Make real Azure ML Designer artifacts with Designer's own modules (run inside the designer
environment of :mod:`tests.support.real.envs`; ``python -m tests.support.real.build designer``
drives it).

For each case: the data goes in as a DataFrameDirectory written by Designer's own
``save_data_frame_to_directory``; the learner is initialised, trained and scored by
Designer's module invoker (``azureml.studio.modulehost.module_invoker``), each module with
its own default parameters (a fixed random seed). Written per case under ``OUT/<case>/``:
``trained_model_outputs/`` (Train Model's output folder, as is), ``holdout.parquet`` (the
rows given to Score Model), ``expected.parquet`` (Score Model's score columns: the oracle)
and ``case.json`` (modules, parameters, label, task).

Usage (inside the environment): ``python designer_build.py OUT``.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fixture_data import make_data  # noqa: E402  (a sibling: this runs inside the environment)

INVOKER = "azureml.studio.modulehost.module_invoker"
INIT = "azureml.studio.modules.ml.initialize_models."
TRAIN = "azureml.studio.modules.ml.train.train_generic_model"
SCORE = "azureml.studio.modules.ml.score.score_generic_module"

#: case -> (learner module under initialize_models, task, label column)
CASES: dict[str, tuple[str, str, str]] = {
    "binary_logreg": (
        "binary_classifier.logistic_regression_biclassifier.logistic_regression_biclassifier",
        "binary",
        "churned",
    ),
    "binary_forest": (
        "binary_classifier.decision_forest_biclassifier.decision_forest_biclassifier",
        "binary",
        "churned",
    ),
    "multiclass_forest": (
        "multi_classifier.decision_forest_multiclassifier.decision_forest_multiclassifier",
        "multiclass",
        "segment",
    ),
    "regression_linear": (
        "regressor.linear_regressor.linear_regressor",
        "regression",
        "spend",
    ),
    # A learner whose scoring the importer does not reproduce: the import must refuse it
    # by name (the fixture is real so that the refusal is tested on what Designer writes).
    "binary_svm": (
        "binary_classifier.support_vector_machine_biclassifier.support_vector_machine_biclassifier",
        "binary",
        "churned",
    ),
}


def module_defaults(module: str) -> dict[str, Any]:
    """``--option=value`` pairs for every parameter of a Designer module at its default
    (only those whose parent mode is the chosen one)."""
    from azureml.studio.core.utils.strutils import to_cli_option_str
    from azureml.studio.modulehost.module_reflector import BaseModule

    mod = importlib.import_module(module)

    def module_classes(m: Any) -> list[type]:
        return [
            o
            for o in vars(m).values()
            if inspect.isclass(o) and issubclass(o, BaseModule) and o.__module__ == m.__name__
        ]

    if not module_classes(mod):
        mod = importlib.import_module(module + "." + module.rsplit(".", 1)[1])
    (cls,) = module_classes(mod)
    chosen: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for param in inspect.signature(cls.run).parameters.values():
        ann = param.annotation
        if type(ann).__name__.endswith("Port") or not hasattr(ann, "default_value"):
            continue
        parent = getattr(ann, "parent_parameter", None)
        if parent is not None and chosen.get(parent) not in (
            getattr(ann, "parent_parameter_val", None) or ()
        ):
            continue
        value = ann.default_value
        if value is None:
            continue
        chosen[ann.name] = value
        out[to_cli_option_str(ann.name)] = value.name if isinstance(value, enum.Enum) else value
    return out


def invoke(module: str, params: dict[str, Any], **ports: Any) -> None:
    """Run one Designer module through its module invoker, in a fresh process."""
    args = [f"--module-name={module}"]
    args += [f"{k}={v}" for k, v in params.items()]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in ports.items()]
    code = (
        "import designer_shim, runpy, sys; sys.argv = ['module_invoker'] + sys.argv[1:]; "
        f"runpy.run_module({INVOKER!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"Designer module {module} failed (exit {done.returncode})")


def build_case(name: str, out: Path, work: Path) -> dict[str, Any]:
    """Train and score one case with Designer's modules; write its files under ``out``."""
    from azureml.studio.core.io.data_frame_directory import (
        load_data_frame_from_directory,
        save_data_frame_to_directory,
    )

    learner, task, label = CASES[name]
    data = make_data()
    others = [c for c in ("churned", "segment", "spend") if c != label]
    data = data.drop(columns=others)
    train, holdout = data.iloc[:300].reset_index(drop=True), data.iloc[300:].reset_index(drop=True)
    features = holdout.drop(columns=[label])

    save_data_frame_to_directory(str(work / "train"), train)
    init_params = {**module_defaults(INIT + learner), "--random-number-seed": 0}
    invoke(INIT + learner, init_params, untrained_model=work / "untrained")
    rule = {
        "isFilter": True,
        "rules": [{"exclude": False, "ruleType": "ColumnNames", "columns": [label]}],
    }
    train_params = module_defaults(TRAIN)
    invoke(
        TRAIN,
        train_params,
        untrained_model=work / "untrained",
        dataset=work / "train",
        label_column=json.dumps(rule),
        trained_model=work / "trained",
    )
    # Score Model changes its input folder in place: a fresh one per case.
    save_data_frame_to_directory(str(work / "holdout"), features)
    score_params = module_defaults(SCORE)
    invoke(
        SCORE,
        score_params,
        trained_model=work / "trained",
        dataset=work / "holdout",
        scored_dataset=work / "scored",
    )
    scored = load_data_frame_from_directory(str(work / "scored")).data
    score_cols = [c for c in scored.columns if c.startswith("Scored ")]

    dest = out / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copytree(work / "trained", dest / "trained_model_outputs")
    features.to_parquet(dest / "holdout.parquet", index=False)
    scored[score_cols].to_parquet(dest / "expected.parquet", index=False)
    case = {
        "case": name,
        "task": task,
        "label": label,
        "learner_module": INIT + learner,
        "parameters": {
            "initialize": {k: str(v) for k, v in init_params.items()},
            "train": {k: str(v) for k, v in train_params.items()},
            "score": {k: str(v) for k, v in score_params.items()},
        },
        "train_rows": len(train),
        "holdout_rows": len(features),
        "score_columns": score_cols,
    }
    (dest / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    return case


def main() -> None:
    """Build every case into ``sys.argv[1]``."""
    import designer_shim  # noqa: F401  (3.11 names, before Designer's imports)

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    only = sys.argv[2:] or list(CASES)
    for name in only:
        with tempfile.TemporaryDirectory(prefix=f"designer-{name}-") as tmp:
            case = build_case(name, out, Path(tmp))
        print(f"{name}: {case['holdout_rows']} scored rows, columns {case['score_columns']}")


if __name__ == "__main__":
    main()
