"""`python -m training`: the training Job. Exit codes: 0 registered, 2 bad configuration,
3 gates failed, 4 registry unreachable, 1 anything else. The last line of stdout is
one JSON summary, for people and for scripts."""

from __future__ import annotations

import json
import logging
import sys

from training.errors import TrainingError
from training.settings import build_parser, settings_from_args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        from training.pipeline import run  # heavy imports only once the settings are valid

        summary = run(settings)
    except TrainingError as e:
        logging.getLogger("training").error("%s", e)
        print(json.dumps({"status": "error", "exit_code": e.exit_code, "error": str(e)}))
        return e.exit_code
    except Exception as e:  # the Job must still end with its JSON line
        logging.getLogger("training").exception("training failed")
        print(json.dumps({"status": "error", "exit_code": 1, "error": f"{type(e).__name__}: {e}"}))
        return 1
    if summary.status == "rejected":
        logging.getLogger("training").error(
            "gates failed, no alias moved: %s", "; ".join(summary.reasons)
        )
    print(summary.to_json())
    return 0 if summary.status == "registered" else 3


if __name__ == "__main__":
    sys.exit(main())
