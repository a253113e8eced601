"""LiteLLM proxy command-line settings for speed and steadiness, shared by the local stack and the gateway
container (measurements: docs/benchmarks.md, "Gateway tuning").

- The uvicorn access log is off: one formatted line per request that nobody reads; the usage ledger already
  records every request (key, model, status, tokens, latency). Start-up messages and errors still show.
- With several workers, uvicorn's supervisor kills a worker that does not answer its 5 s health ping. While
  the machine is busy (a worker importing LiteLLM on a loaded CPU), that kills every new worker again and
  again (measured: 40 restarts in 3 minutes, 2 workers serving less than 1); a longer timeout lets them start.
"""

from __future__ import annotations

import json
from pathlib import Path

from confgen.atomic import write_atomic

LOG_CONFIG_FILE = "uvicorn-log.json"
# How long the gateway keeps an idle client connection open (uvicorn's timeout_keep_alive, default 5 s).
# It must be longer than a client holds an idle connection for reuse, or the two close and reuse it at the
# same instant and the request sent on it is reset unanswered (the client's ReadError, no ledger row: issue 16,
# found in tests/e2e/test_routing.py and reproduced in 1 of 180 reuses after 4.99 s). httpx, and so the OpenAI
# and Anthropic SDKs, keep idle connections 5 s (httpx/_config.py: keepalive_expiry=5.0), nginx's upstream
# keep-alive 60 s (nginx docs: upstream keepalive_timeout); 75 s is nginx's own client-side default.
KEEPALIVE_S = 75
# Read by LiteLLM's CLI (litellm/proxy/proxy_cli.py: --timeout_worker_healthcheck, only used with
# --num_workers > 1; --keepalive_timeout, envvar KEEPALIVE_TIMEOUT).
WORKER_ENV = {"TIMEOUT_WORKER_HEALTHCHECK": "60", "KEEPALIVE_TIMEOUT": str(KEEPALIVE_S)}
# uvicorn's default logging (uvicorn.config.LOGGING_CONFIG) without the access handler: a logger without
# handlers makes uvicorn skip the access log entirely (no formatting either).
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s",
                               "use_colors": False}},
    "handlers": {"default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def proxy_args(folder: Path) -> list[str]:
    """Arguments for `litellm` after --config/--host/--port; writes the log config into `folder`."""
    log_config = folder / LOG_CONFIG_FILE
    write_atomic(log_config, json.dumps(LOG_CONFIG, indent=1) + "\n", mode=0o644)
    return ["--log_config", str(log_config)]
