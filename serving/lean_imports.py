"""What the predictor process leaves out of its imports, and why.

Each costs every replica start time or memory for code the predictor never runs. They
are left out of `python -m serving` only: training, MLflow (also in the predictor's
registry child) and the tests import them as usual. The costs below were measured
with `python -X importtime` and RSS on this project's VM.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType

# pandas loads pyarrow whenever it is installed (MLflow installs it): about 35 MB
# resident, and 0.2 s, for a library neither process calls. In the registry child MLflow
# imports the real pandas, which carries on without it.
NOT_INSTALLED = ("pyarrow",)

# Stand-ins for modules imported at the top of packages the predictor uses, for code
# of theirs it never calls. Each listed name is a class that nothing is an instance of
# (so `isinstance` checks answer False) and that fails loudly if created; any other
# name fails as missing. The registry child, which runs MLflow, gets none of them.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    # KServe's Kubernetes API client, and with it the `kubernetes` package, imported by
    # `import kserve`: about 0.4 s of the start here.
    "kserve.api.kserve_client": ("KServeClient",),
    # KServe imports pandas for its DataFrame codecs, which the predictor replaces with
    # numpy's, and scikit-learn to recognise DataFrames it is never given here: about
    # 0.3 s of the start and 30 MB resident per replica.
    "pandas": ("DataFrame", "Series"),
}


class LeaveOut(importlib.abc.MetaPathFinder):
    """Makes `import NAME` fail in this process as if NAME were not installed."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is left out of the predictor", name=fullname)


class Placeholders(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves each listed module as a stand-in whose listed names fail when used: for a
    module a package imports at its top, which this process never uses."""

    def __init__(self, modules: dict[str, tuple[str, ...]]) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: ModuleType) -> None:
        for name in self.modules[module.__name__]:
            setattr(module, name, _left_out(module.__name__, name))
        module.__getattr__ = _missing(module.__name__)  # type: ignore[method-assign]


def _left_out(module: str, name: str) -> type:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{module}.{name} is left out of the predictor process")

    return type(name, (), {"__init__": refuse, "__module__": module})


def _missing(module: str) -> Callable[[str], object]:
    """A module-level `__getattr__`: any name not listed is missing, and says why."""

    def missing(name: str) -> object:
        raise AttributeError(f"{module}.{name} is left out of the predictor process")

    return missing


def install(placeholders: bool = True) -> None:
    """Put the finders first on `sys.meta_path`, once; before the imports they affect.
    Without `placeholders` (the registry child: MLflow uses pandas), only leave out."""
    if any(isinstance(f, LeaveOut | Placeholders) for f in sys.meta_path):
        return
    finders: list[importlib.abc.MetaPathFinder] = [LeaveOut(*NOT_INSTALLED)]
    if placeholders:
        finders.append(Placeholders(PLACEHOLDERS))
    sys.meta_path[:0] = finders
