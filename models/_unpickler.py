"""Reading pickles without trusting them more than needed.

Three tools, from safest to least safe:

* :func:`scan_pickle_globals` lists the classes and functions a plain pickle names, by
  reading its opcodes (nothing is executed).
* :func:`load_designer_pickle` unpickles a Designer learner through a restricted unpickler:
  Designer classes (``azureml.studio...``) become inert stand-ins that only keep their
  state, NumPy/SciPy/pandas/scikit-learn *types* (plus the handful of reconstruction
  helpers those libraries pickle with) are admitted, and anything else is refused by name.
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

#: Packages whose *types* the restricted unpickler admits.
ALLOWED_PACKAGES = ("numpy", "scipy", "pandas", "sklearn")

#: Parts of those packages that read or write files or run code: never admitted.
DENIED_MODULE_PREFIXES = (
    "numpy.testing",
    "numpy.f2py",
    "numpy.distutils",
    "numpy.ctypeslib",
    "numpy.lib.npyio",
    "numpy.lib._npyio_impl",
    "numpy.lib.format",
    "numpy.lib._format_impl",
    "numpy.lib._datasource",
    "numpy.lib.utils",
    "pandas.io",
    "pandas.util",
    "pandas.testing",
    "pandas._testing",
    "scipy.io",
    "scipy._lib._testutils",
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.utils._testing",
    "sklearn.utils.parallel",
)
DENIED_NAMES = frozenset({"memmap", "DataSource", "HDFStore", "ExcelWriter"})

#: Reconstruction helpers (functions, not types) that NumPy/pandas/SciPy pickles call.
ALLOWED_FUNCTIONS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas.core.internals.blocks", "_unpickle_block"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
        ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
        ("pandas._libs.tslibs.nattype", "__nat_unpickle"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas.core.arrays.categorical", "_unpickle"),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
    }
)

#: Plain Python types a model's state may hold.
ALLOWED_BUILTINS = frozenset(
    {
        ("builtins", n)
        for n in (
            "object",
            "set",
            "frozenset",
            "slice",
            "complex",
            "bytearray",
            "range",
            "list",
            "dict",
            "tuple",
            "int",
            "float",
            "str",
            "bytes",
            "bool",
        )
    }
    | {
        ("collections", "OrderedDict"),
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
    }
)

#: Designer module prefixes whose classes become state-keeping stand-ins.
DESIGNER_MODULE_PREFIXES = (
    "azureml.studio.modules.ml.",
    "azureml.studio.modules.datatransform.common.",
    "azureml.studio.common.",
    "azureml.studio.core.",
    "azureml.studio.modulehost.",
)


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


def _is_denied_module(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in DENIED_MODULE_PREFIXES)


def check_library_global(module: str, name: str) -> Any:
    """The object ``module.name`` if the restricted unpickler admits it.

    Raises:
        pickle.UnpicklingError: naming the refused global.
    """
    full = f"{module}.{name}"
    if (module, name) in ALLOWED_BUILTINS or (module, name) in ALLOWED_FUNCTIONS:
        return _resolve(module, name)
    top = module.split(".", 1)[0]
    if top in ALLOWED_PACKAGES and not _is_denied_module(module):
        if name.split(".")[-1] in DENIED_NAMES:
            raise pickle.UnpicklingError(f"'{full}' is not allowed")
        try:
            obj = _resolve(module, name)
        except (ImportError, AttributeError) as exc:
            raise pickle.UnpicklingError(f"'{full}' does not exist here ({exc})") from None
        real_module = str(getattr(obj, "__module__", module) or module)
        if (
            isinstance(obj, type)
            and real_module.split(".", 1)[0] in ALLOWED_PACKAGES
            and not _is_denied_module(real_module)
        ):
            return obj
        raise pickle.UnpicklingError(f"'{full}' is not a NumPy/SciPy/pandas/scikit-learn type")
    raise pickle.UnpicklingError(f"'{full}' is outside the allow list")


class _DesignerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith(DESIGNER_MODULE_PREFIXES):
            return standin_class(f"{module}.{name}")
        return check_library_global(module, name)


def load_designer_pickle(path: Path) -> Any:
    """Unpickle a Designer ``_data.pkl`` through the restricted unpickler.

    Returns:
        The learner as a :class:`DesignerStandIn` tree holding real scikit-learn objects.

    Raises:
        ModelImportError: the pickle names a class outside the allow list (named in the
            message), or is not a valid pickle.
    """
    try:
        with open(path, "rb") as fh:
            return _DesignerUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise ModelImportError(
            f"Refused to unpickle '{path.name}': it names a class outside the allow list: {exc}"
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


def missing_modules(globals_: set[tuple[str, str]]) -> list[str]:
    """The modules among ``globals_`` that cannot be imported here (sorted)."""
    import importlib.util

    missing: set[str] = set()
    for module, _ in globals_:
        try:
            if importlib.util.find_spec(module) is None:
                missing.add(module)
        except (ImportError, ValueError):
            missing.add(module)
    return sorted(missing)


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
