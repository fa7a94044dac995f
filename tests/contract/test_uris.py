"""The `models:/` URIs every component reads and writes, and the aliases."""

from __future__ import annotations

import pytest

from contract.uris import (
    CHALLENGER,
    CHAMPION,
    InvalidModelUri,
    ModelRef,
    alias_uri,
    is_version_number,
    parse_model_uri,
    version_uri,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/breast-cancer/7", ModelRef("breast-cancer", version="7")),
        ("models:/breast-cancer@champion", ModelRef("breast-cancer", alias="champion")),
        ("models:/iris@challenger", ModelRef("iris", alias="challenger")),
        # Dotted aliases are aliases; a version is digits only.
        ("models:/breast-cancer@v1.2", ModelRef("breast-cancer", alias="v1.2")),
    ],
)
def test_registry_uris_parse_into_name_and_version_or_alias(uri: str, expected: ModelRef) -> None:
    ref = parse_model_uri(uri)

    assert ref == expected
    assert ref.uri == uri


def test_blanks_around_a_uri_are_ignored() -> None:
    assert parse_model_uri("  models:/iris/3\n") == ModelRef("iris", version="3")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("", "set MODEL_URI"),
        ("runs:/abc/model", "is not a registry URI"),
        ("s3://bucket/model", "is not a registry URI"),
        ("models:/breast-cancer", "expected models:/NAME/VERSION or models:/NAME@ALIAS"),
        ("models:/breast-cancer/Production", "stages and 'latest' are not reproducible"),
        ("models:/breast-cancer/latest", "pin a version or use an alias"),
        ("models:/breast-cancer/0", "'0' is not a version number"),
        ("models:/breast-cancer@", "expected models:/NAME/VERSION"),
        ("models:/a/b/3", "expected models:/NAME/VERSION"),
    ],
)
def test_other_uris_are_refused_saying_what_is_expected(uri: str, expected: str) -> None:
    with pytest.raises(InvalidModelUri, match=expected):
        parse_model_uri(uri)


def test_built_uris_parse_back_to_what_built_them() -> None:
    assert parse_model_uri(version_uri("iris", "12")) == ModelRef("iris", version="12")
    assert parse_model_uri(alias_uri("iris", CHAMPION)) == ModelRef("iris", alias=CHAMPION)
    assert ModelRef("iris", alias=CHALLENGER).version_uri("4") == "models:/iris/4"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("1", True), ("42", True), ("0", False), ("01", False), ("latest", False), ("", False)],
)
def test_version_numbers_start_at_one(ref: str, expected: bool) -> None:
    assert is_version_number(ref) is expected
