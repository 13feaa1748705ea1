"""The Designer unpickler's allow-list means it: exact fully qualified names, taken from real
Train Model outputs; every known gadget is refused by name before any object is built, and
no pickle made of allowed names plus random globals reaches a callable outside the list."""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.base.errors import ModelImportError
from models._unpickler import (
    DESIGNER_CLASSES,
    LIBRARY_GLOBALS,
    DesignerStandIn,
    load_designer_pickle,
    scan_pickle_globals,
)

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "designer"


def _global(module: str, name: str) -> bytes:
    """A protocol-0 pickle whose whole content is one global: loading it returns that object."""
    return f"c{module}\n{name}\n.".encode()


def _call(module: str, name: str, *args: str) -> bytes:
    """A protocol-0 pickle that calls ``module.name(*args)`` (REDUCE) when loaded."""
    arg_ops = "".join(f"V{a}\n" for a in args)
    return f"c{module}\n{name}\n({arg_ops}tR.".encode()


class _Reduce:
    """Pickles as a call of ``fn(*args)``: the shape of every reduce-based gadget."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _gadgets(marker: Path) -> dict[str, bytes]:
    touch = f"touch {marker}"
    from sklearn.preprocessing import FunctionTransformer

    return {
        "pandas Expr": _call("pandas.core.computation.expr", "Expr", "__import__('os')"),
        "pandas eval": _call("pandas", "eval", "1+1"),
        "pandas read_pickle": _call("pandas", "read_pickle", str(marker)),
        "numpy load": _call("numpy", "load", str(marker)),
        "numpy object array": pickle.dumps(np.array([_Reduce(os.system, touch)], dtype=object)),
        "functools.partial": pickle.dumps(_Reduce(functools.partial(os.system, touch))),
        # getter(importlib.import_module("os")): os.system, or os.system(touch)
        "operator.attrgetter": (
            b"coperator\nattrgetter\n(Vsystem\ntR(cimportlib\nimport_module\n(Vos\ntRtR."
        ),
        "operator.methodcaller": (
            f"coperator\nmethodcaller\n(Vsystem\nV{touch}\ntR"
            "(cimportlib\nimport_module\n(Vos\ntRtR."
        ).encode(),
        "builtins.getattr": _call("builtins", "getattr", "os", "system"),
        "builtins.eval": _call("builtins", "eval", f"__import__('os').system('{touch}')"),
        "builtins.exec": _call("builtins", "exec", f"import os; os.system('{touch}')"),
        "os.system": _call("os", "system", touch),
        "posix.system": _call("posix", "system", touch),
        "subprocess.Popen": pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(marker)])),
        "importlib.import_module": _call("importlib", "import_module", "antigravity"),
        "FunctionTransformer": pickle.dumps(FunctionTransformer(func=os.system)),
        "copyreg with os": pickle.dumps(_Reduce(os.system, touch), protocol=2),
    }


@pytest.mark.parametrize("name", sorted(_gadgets(Path("/x"))))
def test_known_gadget_is_refused_by_name_and_runs_nothing(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data.ilearner"
    path.write_bytes(_gadgets(marker)[name])
    with pytest.raises(ModelImportError, match="outside the allow list") as err:
        load_designer_pickle(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    named = scan_pickle_globals(path)
    if named:  # the refusal names what the file names (not walkable: refused as such)
        refused = [
            f"{m}.{n}"
            for m, n in named
            if f"{m}.{n}" not in DESIGNER_CLASSES and (m, n) not in LIBRARY_GLOBALS
        ]
        assert refused and all(r in message for r in refused)
    assert not marker.exists()


#: Real Designer outputs of learners whose scoring is not reproduced (refused by name).
NOT_REPRODUCED = {"binary_svm"}


@pytest.mark.parametrize(
    "case", sorted(p.name for p in REAL.iterdir() if p.is_dir() and p.name not in NOT_REPRODUCED)
)
def test_real_designer_pickles_use_only_allowed_names(case: str) -> None:
    path = REAL / case / "trained_model_outputs" / "data.ilearner"
    named = scan_pickle_globals(path)
    assert named is not None
    outside = (
        {f"{m}.{n}" for m, n in named} - DESIGNER_CLASSES - {f"{m}.{n}" for m, n in LIBRARY_GLOBALS}
    )
    assert outside == set()
    learner = load_designer_pickle(path)
    assert isinstance(learner, DesignerStandIn)


_ALLOWED = sorted(LIBRARY_GLOBALS) + [tuple(c.rsplit(".", 1)) for c in sorted(DESIGNER_CLASSES)]
_MODULES = ["os", "builtins", "subprocess", "pandas", "numpy", "sklearn.utils", "functools",
            "operator", "importlib", "numpy.lib.npyio", "pickle", "codecs", "shutil"]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(
        st.one_of(
            st.sampled_from(_ALLOWED),
            st.tuples(
                st.sampled_from(_MODULES),
                st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z", fullmatch=True),
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_no_callable_outside_the_list_is_ever_reached(
    tmp_path_factory: Any, picks: list[tuple[str, str]]
) -> None:
    # A stream that pushes each global in turn (POP after all but the last) and returns the
    # last: loading it hands back exactly the object find_class produced.
    body = "".join(f"c{m}\n{n}\n0" for m, n in picks[:-1]) + "c{}\n{}\n.".format(*picks[-1])
    path = tmp_path_factory.mktemp("prop") / "data.ilearner"
    path.write_bytes(body.encode())
    allowed = {f"{m}.{n}" for m, n in LIBRARY_GLOBALS} | set(DESIGNER_CLASSES)
    outside = [f"{m}.{n}" for m, n in picks if f"{m}.{n}" not in allowed]
    if outside:
        with pytest.raises(ModelImportError, match="outside the allow list") as err:
            load_designer_pickle(path)
        assert all(name in str(err.value) for name in outside)
        return
    obj = load_designer_pickle(path)
    module, name = picks[-1]
    if f"{module}.{name}" in DESIGNER_CLASSES:
        assert isinstance(obj, type) and issubclass(obj, DesignerStandIn)
        assert obj.designer_path == f"{module}.{name}"
    else:
        assert obj is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("case", sorted(NOT_REPRODUCED))
def test_real_learner_outside_the_list_is_refused_naming_its_classes(case: str) -> None:
    path = REAL / case / "trained_model_outputs" / "data.ilearner"
    with pytest.raises(ModelImportError, match="outside the allow list") as info:
        load_designer_pickle(path)
    assert "SupportVectorMachineBiClassifier" in str(info.value)
    assert "sklearn.svm._classes.LinearSVC" in str(info.value)
