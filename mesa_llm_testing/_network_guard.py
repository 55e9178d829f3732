"""Refuse connections that would leave the machine while a fake LLM fixture is active.

The fake answers every litellm completion, but a model (or a library it uses) may
reach for the network another way: an SDK client of its own, ``requests``,
``urllib``, aiohttp, a litellm call that is not a completion. All of them end in
``socket.getaddrinfo`` (name lookup) and ``socket.socket.connect``; while
:func:`block_network` is active those raise :class:`NetworkBlockedError` naming
the host, port and the fixture, for any address that is not loopback. Local
servers (``127.0.0.1``, ``::1``, ``localhost``) and Unix sockets still work.
Process-wide (every thread), re-entrant, restored on exit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["NetworkBlockedError", "block_network"]


class NetworkBlockedError(RuntimeError):
    """A connection to a non-loopback address was attempted while a fake LLM fixture was active.

    A ``RuntimeError``, not an ``OSError``: HTTP clients must not retry it as a
    transient connection failure.
    """


_lock = threading.Lock()
_owners: list[str] = []
_saved: dict[str, Callable[..., Any]] = {}


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    text = str(host).strip("[]").split("%")[0]
    if text == "localhost" or text.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


def _refuse(host: Any, port: Any, how: str) -> NetworkBlockedError:
    owner = _owners[-1] if _owners else "a fake LLM"
    return NetworkBlockedError(
        f"mesa_llm_testing: {how} to {host}:{port} refused: it would leave the machine while "
        f"{owner} is active{_caller()}. litellm completions are answered by the fake (any "
        "model string); send HTTP to the fake_llm_http api_base or a server on 127.0.0.1; "
        "to let the real provider answer and keep its replies, run pytest with "
        "--mesa-llm-record=PATH (then replay them with --mesa-llm-cassette=PATH)"
    )


def _caller() -> str:
    """Who made the refused call: the agent and model step, when an agent is stepping."""
    from mesa_llm.parallel_stepping import current_agent

    agent = current_agent()
    if agent is None:
        return ""
    step = getattr(getattr(agent, "model", None), "steps", None)
    return f" (called by agent {getattr(agent, 'unique_id', agent)!r} at step {step})"


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    if not (_is_local_host(host) or _is_ip_literal(host)):
        raise _refuse(host, port, "name lookup (socket.getaddrinfo)")
    return _saved["getaddrinfo"](host, port, *args, **kwargs)


def _check_address(sock: socket.socket, address: Any, how: str) -> None:
    inet = sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple)
    if inet and not _is_local_host(address[0]):
        raise _refuse(address[0], address[1], how)


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address, "connection (socket.connect)")
    _saved["connect"](self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address, "connection (socket.connect_ex)")
    result: int = _saved["connect_ex"](self, address)
    return result


@contextlib.contextmanager
def block_network(owner: str) -> Iterator[None]:
    """Refuse non-loopback name lookups and connections inside the block (``owner`` is named)."""
    with _lock:
        if not _owners:
            _saved.update(
                getaddrinfo=socket.getaddrinfo,
                connect=socket.socket.connect,
                connect_ex=socket.socket.connect_ex,
            )
            socket.getaddrinfo = _guarded_getaddrinfo
            socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
            socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
        _owners.append(owner)
    try:
        yield
    finally:
        with _lock:
            _owners.remove(owner)
            if not _owners:
                socket.getaddrinfo = _saved.pop("getaddrinfo")  # type: ignore[assignment]
                socket.socket.connect = _saved.pop("connect")  # type: ignore[method-assign]
                socket.socket.connect_ex = _saved.pop("connect_ex")  # type: ignore[method-assign]
