"""Serve an ``aiohttp.web`` application on a real TCP socket from a background thread.

The thread owns its own event loop, so the server keeps answering while the
caller's thread blocks in a sync client or runs its own loop. Stopping is
bounded: in-flight handlers get ``shutdown_timeout`` seconds, then they are
cancelled and the connections closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from aiohttp import web

from mesa_llm_testing._fake import ACTIVE_HTTP_BASES, FakeCore
from mesa_llm_testing._http import DEFAULT_STALL, build_app

__all__ = ["BackgroundServer", "serve"]

logger = logging.getLogger(__name__)

_START_TIMEOUT: Final = 10.0


class BackgroundServer:
    """``app`` served on ``host:port`` (0: a free port) by a daemon thread with its own loop."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 1.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (the port actually bound)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        """Start serving; return :attr:`url` once the socket is bound (raise if it cannot be)."""
        if self._thread is not None:
            raise RuntimeError("mesa_llm_testing: this server is already started")
        self._thread = threading.Thread(
            target=self._serve, name=f"mesa-fake-http-{self.host}:{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(
                f"mesa_llm_testing: the fake HTTP server did not start within {_START_TIMEOUT}s"
            )
        if self._error is not None:
            raise RuntimeError(
                f"mesa_llm_testing: cannot serve on {self.host}:{self.port}: {self._error}"
            ) from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread (at most ``timeout`` seconds)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("mesa_llm_testing: the fake HTTP server thread did not stop")

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port, backlog=1024)
            loop.run_until_complete(site.start())
            self.port = int(runner.addresses[0][1])
        except BaseException as exc:  # reported to start(); the thread ends here
            self._error = exc
            self._ready.set()
            loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(runner.cleanup())
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()


@contextmanager
def serve(
    fake: FakeCore,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    stall: float = DEFAULT_STALL,
) -> Iterator[str]:
    """Context manager behind :meth:`FakeLLM.http`: yields ``http://host:port/v1``."""
    server = BackgroundServer(build_app(fake, stall=stall), host=host, port=port)
    api_base = server.start() + "/v1"
    ACTIVE_HTTP_BASES.add(api_base)
    try:
        yield api_base
    finally:
        ACTIVE_HTTP_BASES.discard(api_base)
        server.stop()
