"""What the predictor process leaves out of its imports, and why.

Each costs every replica start time or memory for code the predictor never runs. They
are left out of `python -m serving` only: training, MLflow and the tests import them
as usual. `make bench` measures the start with and without them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

# pandas, which KServe and scikit-learn import, loads pyarrow whenever it is installed
# (MLflow installs it): about 35 MB resident per replica for a library the predictor
# never calls. pandas (like scikit-learn's dataframe checks) carries on without it.
NOT_INSTALLED = ("pyarrow",)

# KServe's package imports its Kubernetes API client, and with it the `kubernetes`
# package, on `import kserve`: about 0.4 s of the start here. Only that name is used.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {"kserve.api.kserve_client": ("KServeClient",)}


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


def _left_out(module: str, name: str) -> type:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{module}.{name} is left out of the predictor process")

    return type(name, (), {"__init__": refuse, "__module__": module})


def install() -> None:
    """Put the finders first on `sys.meta_path`, once; before the imports they affect."""
    if any(isinstance(f, LeaveOut | Placeholders) for f in sys.meta_path):
        return
    sys.meta_path[:0] = [LeaveOut(*NOT_INSTALLED), Placeholders(PLACEHOLDERS)]
