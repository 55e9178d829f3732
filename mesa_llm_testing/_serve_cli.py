"""``mesa-llm-testing serve``: the fake LLM as an OpenAI-compatible server, out of process.

::

    mesa-llm-testing serve [--host H] [--port P] [--faults R] [--kinds K,...] [--seed N]
                           [--latency S] [--stall S] [--limits L] [--admin-token T]

Prints its base URL (``http://127.0.0.1:PORT/v1``) as the first line of output,
then serves until Ctrl-C or SIGTERM, and exits 0. Endpoints: ``POST
/v1/chat/completions``, ``GET /v1/models``, ``GET /health``, ``GET /admin/faults``
(``FaultPlan.to_json()``), ``GET /admin/stats``, ``POST /admin/reset``; with
``--admin-token`` the admin endpoints need ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any, TextIO

__all__ = ["add_serve_parser", "cmd_serve"]

logger = logging.getLogger(__name__)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"must be a number from 0 to 1 (0 = no faults, 1 = every call faults); got {text!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0; got {text!r}")
    return value


def _latency(text: str) -> Any:
    from mesa_llm_testing._latency import parse_latency

    try:
        return parse_latency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port from 0 to 65535 (0: any free port); got {text!r}"
        )
    return int(text)


def _kinds(text: str) -> str:
    from mesa_llm_testing._faults import FaultKind

    try:
        FaultKind.parse_many(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("mesa_llm_testing: ")) from None
    return text


def add_serve_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``commands`` (an argparse subparsers object)."""
    serve = commands.add_parser(
        "serve",
        help="serve the fake LLM as an OpenAI-compatible HTTP endpoint until Ctrl-C",
        description="Serve the deterministic fake LLM over HTTP, for simulations in other "
        "processes or languages. Prints the base URL first, then serves until Ctrl-C/SIGTERM.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=0, help="port (default 0: a free port)")
    serve.add_argument("--faults", type=_rate, default=0.0, help="fault rate, 0 to 1 (default 0)")
    serve.add_argument("--kinds", type=_kinds, default=None, help="fault kinds, comma-separated")
    serve.add_argument("--seed", type=int, default=0, help="seed of replies and faults")
    serve.add_argument(
        "--latency",
        type=_latency,
        default=0.0,
        metavar="MODEL",
        help="wait before each answer: seconds, uniform:LOW,HIGH or lognormal:p50=S,p99=S",
    )
    serve.add_argument(
        "--stall",
        type=_seconds,
        default=60.0,
        help="seconds a TIMEOUT fault stalls before closing (default 60; or until the "
        "client hangs up)",
    )
    from mesa_llm_testing._cli_args import limits_arg

    serve.add_argument(
        "--limits",
        type=limits_arg,
        default=None,
        metavar="LIMITS",
        help="provider limits, e.g. rpm=600,tpm=100000,max_concurrent=8 (keys: rpm, tpm, "
        "max_concurrent): calls beyond them get a 429 with Retry-After",
    )
    serve.add_argument("--admin-token", default=None, help="require this bearer token on /admin")
    return serve


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """``serve``: print the base URL, serve until SIGINT/SIGTERM, return 0."""
    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._http import build_app
    from mesa_llm_testing._server import BackgroundServer

    plan = FaultPlan(args.faults, kinds=args.kinds, seed=args.seed)
    fake = FakeLLM(seed=args.seed, faults=plan, latency=args.latency, limits=args.limits)
    app = build_app(fake, admin_token=args.admin_token, stall=args.stall)
    server = BackgroundServer(app, host=args.host, port=args.port)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        url = server.start() + "/v1"
        print(url, file=out, flush=True)
        logger.info("mesa-llm-testing serve: serving %s (faults %s)", url, plan)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
