"""`models:/` URIs and the registry aliases: how every component names a model version
(docs/design.md, "The contract").

A revision pins `models:/NAME/VERSION`; `models:/NAME@ALIAS` is for people and for the
first install, and is resolved to a version before anything is served or written.
Stages and `latest` are refused: they are not reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "models:/"

DEFAULT_MODEL_NAME = "breast-cancer"
"""The registered model's name, and the served V2 model's, unless `MODEL_NAME` says."""

CHAMPION = "champion"
"""What the stable revision serves; only a promotion (or the first version) moves it."""
CHALLENGER = "challenger"
"""The newest version that passed the training gates."""

EXPECTED = "expected models:/NAME/VERSION or models:/NAME@ALIAS"
_VERSION = re.compile(r"^[1-9][0-9]*$")


class InvalidModelUri(ValueError):
    """Not a `models:/` URI this project accepts; the message says what is expected.
    Each component turns it into its own configuration error."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed `models:/` URI: a name and exactly one of version or alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}@{self.alias}" if self.alias else self.version_uri(self.version)

    def version_uri(self, version: str | None) -> str:
        return version_uri(self.name, str(version))

    def describe(self) -> str:
        what = f"alias @{self.alias}" if self.alias else f"version {self.version}"
        return f"{what} of registered model '{self.name}'"


def version_uri(model_name: str, version: str) -> str:
    """`models:/NAME/VERSION`: what a revision pins, never an alias."""
    return f"{SCHEME}{model_name}/{version}"


def alias_uri(model_name: str, alias: str) -> str:
    return f"{SCHEME}{model_name}@{alias}"


def is_version_number(ref: str) -> bool:
    """A registry version: 1, 2, ... (not 0, not a stage, not `latest`)."""
    return bool(_VERSION.match(ref))


def parse_model_uri(uri: str) -> ModelRef:
    """Parse `models:/NAME/VERSION` or `models:/NAME@ALIAS` (surrounding blanks ignored);
    anything else raises `InvalidModelUri`."""
    uri = uri.strip()
    if not uri:
        raise InvalidModelUri(f"no model: set MODEL_URI (or --model_uri), {EXPECTED}")
    if not uri.startswith(SCHEME):
        raise InvalidModelUri(f"MODEL_URI {uri!r} is not a registry URI: {EXPECTED}")
    rest = uri[len(SCHEME) :]
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in name and "/" not in alias:
            return ModelRef(name=name, alias=alias)
        raise InvalidModelUri(f"MODEL_URI {uri!r}: {EXPECTED}")
    name, _, version = rest.rpartition("/")
    if not name or "/" in name:
        raise InvalidModelUri(f"MODEL_URI {uri!r}: {EXPECTED}")
    if not is_version_number(version):
        raise InvalidModelUri(
            f"MODEL_URI {uri!r}: {version!r} is not a version number. Registry stages and "
            f"'latest' are not reproducible; pin a version or use an alias ({EXPECTED})"
        )
    return ModelRef(name=name, version=version)
