"""Start-up feedback for ``mesa-llm-testing``: say what is about to happen, then show
that the slow litellm import is under way (a spinner on a terminal, one line otherwise)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Final, TextIO

__all__ = ["loading"]

_FRAMES: Final = "|/-\\"
_INTERVAL: Final = 0.1


@contextlib.contextmanager
def loading(what: str, stream: TextIO, *, enabled: bool = True) -> Iterator[None]:
    """Show ``what`` while the block runs: a spinner with the seconds on a TTY, else one line.

    The line is finished with the time taken, so a log of a non-interactive run says
    where the start-up time went.
    """
    if not enabled:
        yield
        return
    start = time.perf_counter()
    tty = bool(getattr(stream, "isatty", lambda: False)())
    stop = threading.Event()
    spinner: threading.Thread | None = None
    if tty:

        def spin() -> None:
            for frame in itertools.cycle(_FRAMES):
                if stop.wait(_INTERVAL):
                    return
                stream.write(f"\r{what} {frame} {time.perf_counter() - start:.1f} s")
                stream.flush()

        spinner = threading.Thread(target=spin, name="mesa-llm-testing-spinner", daemon=True)
        spinner.start()
    else:
        stream.write(f"{what} ...")
        stream.flush()
    try:
        yield
    finally:
        stop.set()
        took = f"done in {time.perf_counter() - start:.1f} s"
        if spinner is not None:
            spinner.join()
            stream.write(f"\r{what}: {took}      \n")
        else:
            stream.write(f" {took}\n")
        stream.flush()
