"""Recording: real litellm completions pass through to the provider and land in a cassette.

:class:`CassetteRecorder` is a :class:`FakeCore` that answers nothing: installed
(``_provider.installed``, ``intercept_all=False``), litellm's wrappers hand it every
completion the fake does not take (:meth:`forward` / :meth:`aforward`); it makes the
call's request as the fake would (who calls, the model step, the call index counted
by its ``FaultPlan``), calls the real provider, and writes the reply or the error.
Its :attr:`calls` hold the same records a fake's do, so a scenario run under it
has a trace comparable with the run that replays it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mesa_llm_testing._calls import FakeRequest
from mesa_llm_testing._cassettes._errors import error_record
from mesa_llm_testing._cassettes._format import CassetteWriter, RunOrdinals, fingerprint
from mesa_llm_testing._fake import FakeCore
from mesa_llm_testing._responses import FakeReply

__all__ = ["CassetteRecorder", "RecordingError", "record_to", "request_fingerprint"]

#: Completion arguments (besides the fingerprinted ones) kept in the request's params.
_PARAMS = ("temperature",)


class RecordingError(RuntimeError):
    """A call that a cassette cannot record (a ``mesa-fake/...`` model: no real provider)."""


def request_fingerprint(request: FakeRequest) -> str:
    """The fingerprint of ``request``: messages, tools, response format, temperature."""
    return fingerprint(
        request.messages, request.tools, request.response_format, request.params.get("temperature")
    )


class CassetteRecorder(FakeCore):
    """Records every real litellm completion made while :meth:`activate` is active."""

    def __init__(
        self,
        path: str | Path,
        *,
        seed: int = 0,
        test_id: str = "",
        header: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(seed=seed)
        self.path = Path(path)
        self.test_id = test_id
        self._header = {"test_id": test_id, "seed": seed, **(header or {})}
        self._writer: CassetteWriter | None = None
        self._runs = RunOrdinals()

    @contextlib.contextmanager
    def activate(self, *, intercept_all: bool = False) -> Iterator[CassetteRecorder]:
        """Record while the block runs (opens the cassette on first use, closes it after)."""
        from mesa_llm_testing._provider import installed

        del intercept_all  # a recorder takes no call away from the real provider
        owns = self._writer is None
        if owns:
            self._writer = CassetteWriter(self.path, self._header)
        finished = False
        try:
            with installed(self, intercept_all=False):
                yield self
            finished = True
        finally:
            if owns:
                # The file is created by the first call recorded: a run that fails before
                # making one (a model that cannot be built) leaves no file behind.
                self.close(keep_empty=finished)

    def open(self) -> None:
        """Start the cassette now (``activate`` then leaves it open); :meth:`close` ends it.

        The file is created by the first call recorded (or by :meth:`close`)."""
        if self._writer is None:
            self._writer = CassetteWriter(self.path, self._header)

    def close(self, *, keep_empty: bool = True) -> None:
        """Finish the cassette file (``keep_empty=False``: no file if no call was recorded)."""
        if self._writer is not None:
            self._writer.close(keep_empty=keep_empty)
            self._writer = None

    @property
    def lines(self) -> int:
        """Lines written so far (header, blobs and calls)."""
        return 0 if self._writer is None else self._writer.lines

    # ------------------------------------------------------------------ the pass-through

    def answer(self, request: FakeRequest) -> FakeReply:
        """A ``mesa-fake/...`` model reached the recorder: there is no real provider to record."""
        raise RecordingError(
            f"mesa_llm_testing: recording a cassette, but model {request.model!r} is the fake's; "
            f"record a real provider's model (e.g. openai/gpt-4o-mini, or --llm-model)"
        )

    def forward(
        self, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Make the call on the real provider and record it."""
        request = self._begin(args, kwargs)
        try:
            response = original(*args, **kwargs)
        except Exception as exc:
            self._failed(request, exc)
            raise
        if kwargs.get("stream"):
            return _RecordedStream(self, request, response)
        self._succeeded(request, response)
        return response

    async def aforward(
        self, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Async :meth:`forward`."""
        request = self._begin(args, kwargs)
        try:
            response = await original(*args, **kwargs)
        except Exception as exc:
            self._failed(request, exc)
            raise
        if kwargs.get("stream"):
            return _RecordedStream(self, request, response)
        self._succeeded(request, response)
        return response

    def _begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FakeRequest:
        model = str((args[0] if args else kwargs.get("model")) or "")
        messages = args[1] if len(args) > 1 else kwargs.get("messages") or []
        if self._writer is None:
            raise RecordingError("mesa_llm_testing: the cassette recorder is not active")
        self._writer.forget_secret(kwargs.get("api_key"))
        params = {k: kwargs[k] for k in _PARAMS if kwargs.get(k) is not None}
        return self.make_request(
            model,
            messages,
            kwargs.get("tools"),
            kwargs.get("tool_choice"),
            kwargs.get("response_format"),
            params,
            "record",
        )

    def _line(self, request: FakeRequest) -> dict[str, Any]:
        run = getattr(request.agent_object, "model", None)
        line: dict[str, Any] = {
            "key": [self._runs.of(run), request.agent, request.step, request.call],
            "model": request.model,
            "fingerprint": request_fingerprint(request),
        }
        if self.test_id:
            line["test"] = self.test_id
        return line

    def streamed(self, request: FakeRequest, chunks: list[Any]) -> None:
        """Record a finished stream as the one reply its chunks add up to."""
        from mesa_llm._litellm import import_litellm

        self._succeeded(request, import_litellm().stream_chunk_builder(chunks, request.messages))

    def _succeeded(self, request: FakeRequest, response: Any) -> None:
        dump = getattr(response, "model_dump", None)
        body = dump(exclude_none=True) if callable(dump) else response
        if isinstance(body, dict):
            body.pop("_hidden_params", None)
        assert self._writer is not None
        self._writer.write_call(
            {**self._line(request), "reply": body}, request.messages, request.tools
        )
        reply = FakeReply.from_model_response(response)
        self.record(
            request,
            FakeReply(reply.content, reply.tool_calls, reply.finish_reason),
            None,
            None,
            200,
        )

    def _failed(self, request: FakeRequest, exc: Exception) -> None:
        record = error_record(exc)
        if self._writer is not None:
            self._writer.write_call(
                {**self._line(request), "error": record}, request.messages, request.tools
            )
        self.record(request, None, exc, None, record["status"])


class _RecordedStream:
    """A litellm stream passed through chunk by chunk, recorded once it ends (or fails)."""

    def __init__(self, recorder: CassetteRecorder, request: FakeRequest, stream: Any) -> None:
        self._recorder, self._request, self._stream = recorder, request, stream
        self._chunks: list[Any] = []
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __iter__(self) -> _RecordedStream:
        return self

    def __aiter__(self) -> _RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._finish(None)
            raise
        except Exception as exc:
            self._finish(exc)
            raise
        self._chunks.append(chunk)
        return chunk

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._finish(None)
            raise
        except Exception as exc:
            self._finish(exc)
            raise
        self._chunks.append(chunk)
        return chunk

    def _finish(self, error: Exception | None) -> None:
        if self._done:
            return
        self._done = True
        if error is None:
            self._recorder.streamed(self._request, self._chunks)
        else:
            self._recorder._failed(self._request, error)


@contextlib.contextmanager
def record_to(
    path: str | Path, *, seed: int = 0, test_id: str = "", **header: Any
) -> Iterator[CassetteRecorder]:
    """Record every real litellm completion made inside the block to the cassette ``path``.

    Calls go to the real provider (a key and the network are needed); each request
    and its reply or error is written, keyed by (model run, agent, step, call index).
    A ``.gz`` path is gzip-compressed. ``header`` entries (scenario, steps, ...) go
    into the header line. Replay with ``FakeLLM.from_cassette(path)``.
    """
    recorder = CassetteRecorder(path, seed=seed, test_id=test_id, header=header)
    with recorder.activate():
        yield recorder
