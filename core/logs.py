"""Log set-up for every `muck` process: readable lines, or JSON lines for a log shipper.

`muck --log-format json …` (or MUCK_LOG_FORMAT=json) writes one JSON object per line on
standard error: `ts` (UTC, ISO 8601), `level`, `logger`, `msg`, and `exc` with the
traceback when there is one. Loki, Elasticsearch or `jq` read it as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

_NOISY = ("transitions", "amqtt", "pgserver", "apscheduler")


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(*, verbose: bool = False, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
