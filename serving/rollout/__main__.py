"""`python -m serving.rollout`: the deprecated name of `python -m rollout`."""

from __future__ import annotations

import sys
import warnings


def main() -> int:
    warnings.warn(
        "`python -m serving.rollout` is deprecated and goes away in the next release: "
        "run `python -m rollout` (same commands, flags and exit codes)",
        FutureWarning,
        stacklevel=1,
    )
    from rollout.__main__ import main as rollout_main

    return rollout_main()


if __name__ == "__main__":
    sys.exit(main())
