"""Log set-up shared by the pipeline steps."""

from __future__ import annotations

import logging


def setup_logging() -> None:
    """Concise progress lines from ``tasks.*`` and ``chintox.*`` on stderr; other libraries stay at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("tasks", "chintox"):
        logging.getLogger(name).setLevel(logging.INFO)
