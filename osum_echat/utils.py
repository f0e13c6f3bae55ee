"""Logging set-up shared by the library and the command-line tools."""
from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str = "osum_echat") -> logging.Logger:
    """A logger under the "osum_echat" hierarchy; configured once, to stderr, rank 0 verbose only."""
    root = logging.getLogger("osum_echat")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        rank = int(os.environ.get("RANK", "0"))
        root.setLevel(os.environ.get("OSUM_LOG_LEVEL", "INFO" if rank == 0 else "WARNING"))
        root.propagate = False
    return logging.getLogger(name if name.startswith("osum_echat") else f"osum_echat.{name}")


logger = get_logger()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear error line (no traceback) and exit; for expected user mistakes in CLIs."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
