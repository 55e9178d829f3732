"""Waiting with a user's ``sleep=`` callable (or the real one), from a thread or a task.

``RetryPolicy(sleep=...)`` and ``RateLimiter(sleep=...)`` both take one: a sync callable,
or an async one for the async paths.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["sleep_in_task", "sleep_in_thread"]


def sleep_in_thread(sleep: Callable[[float], Any] | None, seconds: float, refusal: str) -> None:
    """Wait ``seconds`` with ``sleep`` (None: ``time.sleep``), blocking this thread.

    A ``sleep`` that returns an awaitable cannot be waited for here: it is closed and
    a ``TypeError`` with ``refusal`` (naming the option and the async way) is raised.
    """
    waited = (sleep or time.sleep)(seconds)
    if inspect.isawaitable(waited):
        if inspect.iscoroutine(waited):
            waited.close()
        raise TypeError(refusal)


async def sleep_in_task(sleep: Callable[[float], Any] | None, seconds: float) -> None:
    """Wait ``seconds`` with ``sleep`` (None: ``asyncio.sleep``), awaiting what it returns."""
    if sleep is None:
        await asyncio.sleep(seconds)
    elif inspect.isawaitable(waited := sleep(seconds)):
        await waited
