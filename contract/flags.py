"""One flag style for every command line of the project: both spellings accepted.

KServe's own flags are mostly snake_case (`--http_port`, `--model_name`) with a few in
kebab-case (`--event-loop`, `--timeout-keep-alive`); ours are kebab-case in training and
the rollout, snake_case in the predictor, next to KServe's. Rather than make a user
remember which is which, every parser built from `FlagParser` takes `--tracking-uri`
and `--tracking_uri` alike, and `--help` shows each flag once, as it is declared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser that also accepts the other spelling (`-` or `_`) of every long
    option. Sub-commands made with `add_subparsers()` are FlagParsers too."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        tokens = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.respell(tokens), namespace)

    def respell(self, tokens: list[str]) -> list[str]:
        """`--a_b[=v]` becomes `--a-b[=v]` (or back) where only the other spelling is an
        option of this parser; everything after `--` is left alone."""
        known = self._option_string_actions
        out: list[str] = []
        for index, token in enumerate(tokens):
            if token == "--":
                out.extend(tokens[index:])
                break
            out.append(self._other_spelling(token, known) if token.startswith("--") else token)
        return out

    @staticmethod
    def _other_spelling(token: str, known: Any) -> str:
        name, equals, value = token.partition("=")
        if name in known:
            return token
        body = name[2:]
        for other in (f"--{body.replace('_', '-')}", f"--{body.replace('-', '_')}"):
            if other in known:
                return f"{other}{equals}{value}"
        return token
