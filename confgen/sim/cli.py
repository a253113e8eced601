"""`python -m confgen.sim`: flags (vLLM's names where they overlap) -> one uvicorn server.

argparse rather than click because vLLM's `--served-model-name a b` takes several values after one flag.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

import uvicorn

from confgen.sim.app import SimApp
from confgen.sim.config import FaultError, Faults, SimConfig


def _at_least(low: float, kind: Callable[[str], float] = float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {text}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    description = ("A fake vLLM: the OpenAI API of `vllm serve` with a latency model and faults "
                   "(POST /sim/faults changes faults at run time; GET /sim/stats counts requests).")
    p = argparse.ArgumentParser(prog="python -m confgen.sim", description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("model", nargs="?", help="like `vllm serve MODEL`: the served name when --served-model-name is not given")
    add("--served-model-name", nargs="+", metavar="NAME", help="model names the API accepts (default: MODEL or sim)")
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000)
    add("--api-key", default=None, help="bearer key required on /v1/* (default: env VLLM_API_KEY; none: open)")
    add("--max-num-seqs", type=_at_least(1, int), default=256, help="requests generated at once; more queue")
    add("--max-model-len", type=_at_least(1, int), default=32768, help="longer prompt + max_tokens: 400")
    add("--ttft-ms", type=_at_least(0), default=20.0, help="fixed time to first token")
    add("--per-prompt-token-ms", type=_at_least(0), default=0.0, help="TTFT per prompt token (ceil(chars/4))")
    add("--itl-ms", type=_at_least(0), default=10.0, help="time between output tokens")
    add("--jitter", type=_at_least(0), default=0.0, help="each delay times uniform(1-j, 1+j); 0-1")
    add("--output-tokens", type=_at_least(1, int), default=32, help="answer length unless max_tokens is lower")
    add("--seed", type=int, default=None, help="seed for jitter and error_rate draws")
    add("--error-rate", type=float, default=0.0, help="fault: fraction of requests answered --error-status")
    add("--error-status", type=int, default=500, help="fault: the status of injected errors")
    add("--hang", action="store_true", help="fault: accept requests and never answer")
    add("--slow-start-s", type=float, default=0.0, help="fault: /health 503 and requests refused for this long")
    add("--drop-after-chunks", type=int, default=None, help="fault: close the connection after N stream chunks")
    add("--enable-sleep-mode", action="store_true", help="vLLM's sleep API: POST /sleep?level=N, POST /wake_up, "
                                                         "GET /is_sleeping")
    add("--sleep-s", type=_at_least(0), default=0.0, help="how long POST /sleep takes")
    add("--wake-s", type=_at_least(0), default=0.0, help="how long POST /wake_up takes")
    add("--startup-s", type=_at_least(0), default=0.0, help="seconds before the port opens (a model loading)")
    add("--wake-kills", action="store_true", help="fault: POST /wake_up kills the server (vllm#50011)")
    add("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.jitter > 1:
        print(f"error: --jitter: expected a fraction 0-1, got {args.jitter}", file=sys.stderr)
        return 2
    names = tuple(args.served_model_name or [args.model or "sim"])
    config = SimConfig(served_model_names=names, host=args.host, port=args.port,
                       api_key=args.api_key or os.environ.get("VLLM_API_KEY") or None,
                       max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len, ttft_ms=args.ttft_ms,
                       per_prompt_token_ms=args.per_prompt_token_ms, itl_ms=args.itl_ms, jitter=args.jitter,
                       output_tokens=args.output_tokens, seed=args.seed, sleep_mode=args.enable_sleep_mode,
                       sleep_s=args.sleep_s, wake_s=args.wake_s)
    faults = Faults()
    try:
        faults.update({"error_rate": args.error_rate, "error_status": args.error_status, "hang": args.hang,
                       "slow_start_s": args.slow_start_s, "drop_after_chunks": args.drop_after_chunks,
                       "wake_kills": args.wake_kills})
    except FaultError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    time.sleep(args.startup_s)  # like a vLLM loading its weights: nothing listens yet
    serve(config, faults, args.log_level)
    return 0


def serve(config: SimConfig, faults: Faults, log_level: str = "warning") -> None:
    uv = uvicorn.Config(SimApp(config, faults), host=config.host, port=config.port, http="httptools",
                        loop="uvloop", lifespan="off", access_log=False, log_level=log_level,
                        server_header=False, date_header=False, timeout_graceful_shutdown=1, backlog=4096)
    # A dropped stream (fault drop_after_chunks) is on purpose: don't log it as an application error.
    logging.getLogger("uvicorn.error").addFilter(
        lambda record: "returned without completing response" not in record.getMessage())
    print(f"sim: serving {', '.join(config.served_model_names)} on http://{config.host}:{config.port} "
          f"(ttft {config.ttft_ms} ms + {config.per_prompt_token_ms} ms/prompt token, itl {config.itl_ms} ms, "
          f"{config.output_tokens} tokens, max-num-seqs {config.max_num_seqs}, "
          f"auth {'on' if config.api_key else 'off'})", file=sys.stderr, flush=True)
    uvicorn.Server(uv).run()
