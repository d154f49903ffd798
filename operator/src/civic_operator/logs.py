"""JSON logs, one event per line (kopf's object context included as fields)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_SKIP = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "settings"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _SKIP and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# kopf logs a line for every watch event a handler took ("Handler 'track' succeeded."): with 100 pools and
# their Deployments that was most of `kubectl logs` and a share of the operator's CPU. Failures still log.
WATCH_EVENT_HANDLERS = ("track", "follow_deployment")
_QUIET = frozenset(f"Handler '{name}' succeeded." for name in WATCH_EVENT_HANDLERS)


class QuietWatchEvents(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage() in _QUIET)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(QuietWatchEvents())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for noisy in ("kubernetes.client.rest", "urllib3", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
