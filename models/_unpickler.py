"""Reading pickles without trusting them more than needed.

Three tools, from safest to least safe:

* :func:`scan_pickle_globals` lists the classes and functions a plain pickle names, by
  reading its opcodes (nothing is executed).
* :func:`load_designer_pickle` unpickles a Designer learner through a restricted unpickler
  whose allow-list names exact globals, taken from real Train Model outputs: the Designer
  classes (:data:`DESIGNER_CLASSES`) become inert stand-ins that only keep their state; the
  scikit-learn, NumPy and plain Python globals a learner's state needs
  (:data:`LIBRARY_GLOBALS`) are admitted; anything else is refused by name, before any
  object is built.
* :func:`load_trusted_pickle` unpickles a joblib or pickle file the user consented to load
  (``--trust-pickle``), and reports every module the pickle needs that is not installed,
  instead of failing on the first one.
"""

from __future__ import annotations

import importlib
import io
import logging
import pickle
import pickletools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from lifecycle.base.errors import ModelImportError

logger = logging.getLogger(__name__)

#: Designer classes a real Train Model output pickles (``data.ilearner``), by fully qualified
#: name: the learners whose scoring this importer reproduces, their settings and enums, the
#: normaliser and encoders, and the deployment handler. Each becomes an inert stand-in that
#: only keeps its state. Taken from artifacts made by azureml-designer-classic-modules 0.0.195
#: (tests/fixtures/real/designer); every other class is refused by name.
_STUDIO = "azureml.studio.modules."
_MODELS = _STUDIO + "ml.initialize_models."
_SETTINGS = _MODELS + "common_settings."
_ENCODERS = _STUDIO + "datatransform.common.named_encoder."
DESIGNER_CLASSES = frozenset(
    {
        # learners
        _MODELS + "binary_classifier.logistic_regression_biclassifier."
        "logistic_regression_biclassifier.LogisticRegressionBiClassifier",
        _MODELS + "binary_classifier.decision_forest_biclassifier."
        "decision_forest_biclassifier.DecisionForestBiClassifier",
        _MODELS + "multi_classifier.decision_forest_multiclassifier."
        "decision_forest_multiclassifier.DecisionForestMultiClassifier",
        _MODELS + "regressor.linear_regressor.linear_regressor.OrdinaryLeastSquaresRegressor",
        # their settings and enums
        _SETTINGS + "logistic_regression_setting.LogisticRegressionSetting",
        _SETTINGS + "decision_forest_setting.DecisionForestSetting",
        _SETTINGS + "decision_forest_setting.ResamplingMethod",
        _MODELS
        + "regressor.linear_regressor.linear_regressor.OrdinaryLeastSquaresRegressorSetting",
        _STUDIO + "ml.common.base_learner_setting.BaseLearnerSetting",
        _STUDIO + "ml.common.base_learner.CreateLearnerMode",
        _STUDIO + "ml.common.ml_utils.TaskType",
        # normaliser and encoders
        _STUDIO + "ml.common.normalizer.Normalizer",
        _ENCODERS + "NamedLabelEncoder",
        _ENCODERS + "NamedMinMaxEncoder",
        _ENCODERS + "NamedZScoreEncoder",
        _ENCODERS + "NamedOneHotEncoder",
        # deployment
        _STUDIO + "ml.model_deployment.model_deployment_handler.BaseLearnerDeploymentHandler",
    }
)

#: Library globals a Designer learner's state needs, by fully qualified name: the
#: scikit-learn estimators and transformers Designer's learners wrap, NumPy's array, dtype and
#: scalar reconstruction, and plain Python data types. Nothing that reads files, imports
#: modules, evaluates text or calls an arbitrary function.
LIBRARY_GLOBALS = frozenset(
    {
        ("sklearn.linear_model._logistic", "LogisticRegression"),
        ("sklearn.linear_model._ridge", "Ridge"),
        ("sklearn.linear_model._base", "LinearRegression"),
        ("sklearn.ensemble._forest", "RandomForestClassifier"),
        ("sklearn.ensemble._forest", "RandomForestRegressor"),
        ("sklearn.tree._classes", "DecisionTreeClassifier"),
        ("sklearn.tree._classes", "DecisionTreeRegressor"),
        ("sklearn.tree._tree", "Tree"),
        ("sklearn.preprocessing._data", "MinMaxScaler"),
        ("sklearn.preprocessing._data", "StandardScaler"),
        ("sklearn.preprocessing._encoders", "OneHotEncoder"),
        ("sklearn.preprocessing._encoders", "OrdinalEncoder"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(("numpy", t) for t in ("float64", "float32", "int64", "int32", "int8", "uint8", "bool_")),
        *((m, f) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
          for f in ("_reconstruct", "scalar")),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        *(("builtins", t) for t in ("object", "list", "dict", "tuple", "set", "frozenset", "int",
                                    "float", "str", "bytes", "bytearray", "bool", "complex")),
        ("collections", "OrderedDict"),
    }
)  # fmt: skip


class DesignerStandIn:
    """An inert object standing in for a pickled Designer object: it only keeps state.

    ``designer_path`` (on the generated subclass) is the original ``module.Class`` path;
    positional arguments the pickle passed to the constructor (enum values) are kept in
    ``designer_args``.
    """

    designer_path: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["designer_args"] = args
        self.__dict__["designer_kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state, slots = state
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            self.__dict__["designer_state"] = state
        if slots:
            self.__dict__.update(slots)

    def __repr__(self) -> str:
        return f"<stand-in for {self.designer_path}>"


_STANDIN_CLASSES: dict[str, type[DesignerStandIn]] = {}


def standin_class(path: str) -> type[DesignerStandIn]:
    """The (cached) stand-in class for Designer class ``path``."""
    cls = _STANDIN_CLASSES.get(path)
    if cls is None:
        cls = type(
            path.rsplit(".", 1)[-1],
            (DesignerStandIn,),
            {"designer_path": path, "__module__": __name__},
        )
        _STANDIN_CLASSES[path] = cls
    return cls


def designer_path_of(obj: Any) -> str | None:
    """The Designer class path ``obj`` stands in for (None if it is not a stand-in)."""
    return obj.designer_path if isinstance(obj, DesignerStandIn) else None


def _resolve(module: str, name: str) -> Any:
    mod = importlib.import_module(module)
    obj: Any = mod
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def check_designer_global(module: str, name: str) -> Any:
    """What the Designer unpickler gives for the global ``module.name``: a stand-in for an
    allowed Designer class, the object itself for an allowed library global.

    Raises:
        pickle.UnpicklingError: naming the refused global.
    """
    full = f"{module}.{name}"
    if full in DESIGNER_CLASSES:
        return standin_class(full)
    if (module, name) in LIBRARY_GLOBALS:
        return _resolve(module, name)
    raise pickle.UnpicklingError(f"'{full}' is outside the allow list")


class _DesignerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return check_designer_global(module, name)


def refused_globals(names: set[tuple[str, str]]) -> list[str]:
    """The fully qualified names among ``names`` that the Designer allow-list refuses."""
    return sorted(
        f"{m}.{n}"
        for m, n in names
        if f"{m}.{n}" not in DESIGNER_CLASSES and (m, n) not in LIBRARY_GLOBALS
    )


def load_designer_pickle(path: Path) -> Any:
    """Unpickle a Designer learner (``data.ilearner``) through the restricted unpickler.

    The opcodes are read first (nothing executed): a file naming any global outside
    :data:`DESIGNER_CLASSES` and :data:`LIBRARY_GLOBALS`, or one whose globals cannot be
    read that way, is refused before any object is built. The unpickler checks every global
    again as it loads.

    Returns:
        The learner as a :class:`DesignerStandIn` tree holding real scikit-learn objects.

    Raises:
        ModelImportError: the pickle names globals outside the allow list (all named in the
            message), or is not a valid pickle.
    """
    data = path.read_bytes()
    try:
        named = set(iter_pickle_globals(data))
    except (ValueError, EOFError) as exc:
        raise ModelImportError(
            f"Refused to unpickle '{path.name}': its globals cannot be checked against the "
            f"allow list without running it ({exc})"
        ) from None
    refused = refused_globals(named)
    if refused:
        raise ModelImportError(
            f"Refused to unpickle '{path.name}': it names globals outside the allow list: "
            f"{', '.join(refused)}"
        )
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            # Designer pickles scikit-learn 1.5 objects; the rebuilt model is checked against
            # Designer's own outputs, so the version warning is logged, not printed.
            warnings.simplefilter("always")
            loaded = _DesignerUnpickler(io.BytesIO(data)).load()
        for w in caught:
            logger.info("%s: %s", path.name, str(w.message).splitlines()[0])
        return loaded
    except pickle.UnpicklingError as exc:
        raise ModelImportError(
            f"Refused to unpickle '{path.name}': it names a global outside the allow list: {exc}"
        ) from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ModelImportError(
            f"'{path.name}' is not a readable Designer pickle: {type(exc).__name__}: {exc}"
        ) from exc


def iter_pickle_globals(data: bytes) -> Iterator[tuple[str, str]]:
    """The (module, name) pairs a plain pickle stream references, read from its opcodes.

    Nothing is executed. ``STACK_GLOBAL`` operands are tracked through the memo.

    Raises:
        ValueError: the bytes are not a pickle stream pickletools can walk (e.g. joblib's
            format, which interleaves raw array bytes).
    """
    memo: dict[int, Any] = {}
    recent: list[Any] = []
    for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            yield module, attr
            recent.append(None)
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and isinstance(recent[-2], str) and isinstance(recent[-1], str):
                yield recent[-2], recent[-1]
            else:
                raise ValueError("STACK_GLOBAL with operands that are not plain strings")
            recent.append(None)
        elif name in ("MEMOIZE",):
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(str(arg))] = recent[-1] if recent else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(str(arg))))
        elif isinstance(arg, str):
            recent.append(arg)
        else:
            recent.append(None)
        del recent[:-4]


def scan_pickle_globals(path: Path) -> set[tuple[str, str]] | None:
    """The globals a plain pickle file names, without executing it (None: not walkable)."""
    try:
        return set(iter_pickle_globals(path.read_bytes()))
    except (ValueError, EOFError):
        return None


def module_available(name: str) -> bool:
    """Whether module ``name`` is installed here, found without importing anything: the
    top-level package through ``find_spec`` (which imports nothing for a top-level name),
    each further part as a file or folder in its parent's search locations. Module names taken
    from an untrusted file must never be imported to answer this (importing a package runs
    its ``__init__``)."""
    import importlib.machinery
    import importlib.util

    top, *rest = name.split(".")
    if not top.isidentifier() or not all(part.isidentifier() for part in rest):
        return False
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or [])
    suffixes = tuple(importlib.machinery.all_suffixes())
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        found_pkg = [Path(loc) / part for loc in locations if (Path(loc) / part).is_dir()]
        if last and any(
            (Path(loc) / f"{part}{suffix}").is_file() for loc in locations for suffix in suffixes
        ):
            return True
        if not found_pkg:
            return False
        locations = [str(p) for p in found_pkg]
    return True


def missing_modules(globals_: set[tuple[str, str]]) -> list[str]:
    """The modules among ``globals_`` that are not installed here (sorted); nothing is
    imported to find out (:func:`module_available`)."""
    return sorted({module for module, _ in globals_ if not module_available(module)})


def load_trusted_pickle(path: Path) -> Any:
    """Unpickle a joblib or pickle file the user consented to load.

    Modules the pickle needs that are not installed are collected (their classes replaced
    by inert stand-ins while reading) and reported together.

    Raises:
        ModelImportError: modules are missing (listed), or the file is not a pickle.
    """
    import inspect

    from joblib.numpy_pickle import NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    missing: set[str] = set()

    class _RecordingUnpickler(NumpyUnpickler):  # type: ignore[misc]
        def find_class(self, module: str, name: str) -> Any:
            try:
                importlib.import_module(module)
            except ImportError:
                missing.add(module)
                return standin_class(f"{module}.{name}")
            return super().find_class(module, name)

    # joblib >= 1.5 added ensure_native_byte_order to the unpickler's constructor.
    extra: dict[str, Any] = {}
    if "ensure_native_byte_order" in inspect.signature(NumpyUnpickler.__init__).parameters:
        extra["ensure_native_byte_order"] = True
    try:
        with (
            open(path, "rb") as fh,
            _validate_fileobject_and_memmap(fh, str(path), None) as (fobj, _),
        ):
            if isinstance(fobj, str):
                raise ModelImportError(f"'{path.name}' uses a joblib format older than 0.10")
            obj = _RecordingUnpickler(str(path), fobj, **extra).load()
    except ModelImportError:
        raise
    except Exception as exc:
        if missing:
            obj = None
        else:
            raise ModelImportError(
                f"'{path.name}' could not be unpickled: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
    if missing:
        raise ModelImportError(
            f"'{path.name}' needs modules that are not installed here: {', '.join(sorted(missing))}"
        )
    return obj
