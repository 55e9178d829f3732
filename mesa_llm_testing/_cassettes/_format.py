"""The cassette file: JSON Lines (gzip by ``.gz``), request fingerprints, writing and reading.

A reader finds gzip by its magic bytes, whatever the name.

Line 1 is the header (``{"mesa_llm_cassette": 1, "versions": ..., "test_id": ...,
"seed": ..., ...}``). Then, in write order: ``{"blob": HASH, "value": ...}`` lines,
each message or tool list stored once and referred to by its hash, and one line
per call: ``{"test", "key": [run, agent, step, call], "model", "fingerprint",
"messages": [HASH, ...], "tools": HASH | null}`` plus ``"reply"`` (the provider's
JSON) or ``"error"`` (type, status, headers, message). A blob line always precedes
the first call that refers to it. Secrets never reach the file: the writer drops
secret headers and replaces every ``api_key`` value it was told about.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import threading
import warnings
import weakref
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Final

__all__ = [
    "CASSETTE_FORMAT",
    "HEADER_KEY",
    "SECRET_HEADERS",
    "Cassette",
    "CassetteEntry",
    "CassetteWriter",
    "RunOrdinals",
    "canonical",
    "fingerprint",
    "is_cassette",
    "read_cassette",
]

CASSETTE_FORMAT: Final = 1
HEADER_KEY: Final = "mesa_llm_cassette"
#: Header names (lower case) never written, whatever their value.
SECRET_HEADERS: Final = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
_REDACTED: Final = "[redacted]"


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data: pydantic objects dumped, types as their JSON schema."""
    schema = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema):
        return {"pydantic": value.__name__, "schema": schema()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _plain(dump())
    if isinstance(value, Mapping):
        # Keys with None values are dropped: litellm adds or removes them along its path.
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def canonical(value: Any) -> str:
    """Canonical JSON of ``value`` (sorted keys, no spaces), the input of every hash here."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def fingerprint(messages: Any, tools: Any, response_format: Any, temperature: Any) -> str:
    """The request's content hash: blake2b over canonical JSON of the parts that steer a reply."""
    return _digest(canonical([messages, tools, response_format, temperature]))


def versions() -> dict[str, str]:
    """The versions a cassette header records."""
    found = {"python": platform.python_version()}
    for dist in ("mesa-llm", "mesa", "litellm", "openai"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


class RunOrdinals:
    """Numbers model runs 1, 2, ... in the order their first call is seen (0: no model)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._weak: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[Any, int]] = {}
        self._next = 1

    def of(self, model: Any) -> int:
        """The ordinal of ``model`` (assigned on first sight)."""
        if model is None:
            return 0
        with self._lock:
            try:
                found = self._weak.get(model)
            except TypeError:  # not weak-referenceable: keep it (and its id) alive
                held = self._strong.get(id(model))
                found = None if held is None else held[1]
                if found is None:
                    found, self._next = self._next, self._next + 1
                    self._strong[id(model)] = (model, found)
                return found
            if found is None:
                found, self._next = self._next, self._next + 1
                self._weak[model] = found
            return found


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


class CassetteWriter:
    """Writes one cassette; every line whole, under a lock, so threads and tasks may share it."""

    def __init__(self, path: str | Path, header: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._blobs: set[str] = set()
        self._secrets: set[str] = set()
        self.lines = 0
        self._header = {HEADER_KEY: CASSETTE_FORMAT, "versions": versions(), **header}
        self._file: IO[str] | None = None
        self._closed = False

    def forget_secret(self, secret: Any) -> None:
        """Never write ``secret`` (an ``api_key`` value): it is replaced wherever it appears."""
        if isinstance(secret, str) and len(secret) >= 4:
            with self._lock:
                self._secrets.add(secret)

    def write_call(self, record: dict[str, Any], messages: Sequence[Any], tools: Any) -> None:
        """Write one call: ``record`` plus its messages and tools, each body stored once."""
        bodies = [(canonical(m), m) for m in messages]
        if tools:
            bodies.append((canonical(tools), tools))
        hashes = [_digest(text) for text, _ in bodies]
        record = {
            **record,
            "messages": hashes[: len(messages)],
            "tools": hashes[-1] if tools else None,
        }
        with self._lock:
            for digest, (text, _) in zip(hashes, bodies, strict=True):
                if digest not in self._blobs:
                    self._blobs.add(digest)
                    self._write_line({"blob": digest, "value": json.loads(text)})
            self._write_line(record)

    def _start(self) -> IO[str]:
        """The open file: created, with its header line, by the first call written."""
        if self._closed:
            raise RuntimeError(f"mesa_llm_testing: cassette {self.path} is closed")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = _open(self.path, "w")
            self._write_line(self._header)
        return self._file

    def _write_line(self, data: Mapping[str, Any]) -> None:
        file = self._start()
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        file.write(text + "\n")
        file.flush()
        self.lines += 1

    def close(self, *, keep_empty: bool = True) -> None:
        """Finish the file (a gzip cassette is only complete once closed).

        A cassette with no call yet is written then (its header only), unless
        ``keep_empty`` is False (a run that failed before its first call): no file.
        """
        with self._lock:
            if self._file is None and keep_empty and not self._closed:
                self._start()
            if self._file is not None:
                self._file.close()
                self._file = None
            self._closed = True


@dataclass(frozen=True, slots=True)
class CassetteEntry:
    """One recorded call."""

    test: str
    key: tuple[int, Any, int | None, int]  # (run, agent, step, call)
    model: str
    fingerprint: str
    messages: tuple[str, ...]  # blob hashes
    reply: dict[str, Any] | None
    error: dict[str, Any] | None
    line: int


@dataclass
class Cassette:
    """A cassette read back: its header, blobs and calls (by test id, then identity key)."""

    path: Path
    header: dict[str, Any]
    blobs: dict[str, Any] = field(default_factory=dict)
    entries: list[CassetteEntry] = field(default_factory=list)

    def tests(self) -> list[str]:
        """The test ids with calls, in first-call order."""
        return list(dict.fromkeys(entry.test for entry in self.entries))

    def messages_of(self, entry: CassetteEntry) -> list[Any]:
        """The recorded messages of ``entry``."""
        return [self.blobs[h] for h in entry.messages]


_GZIP_MAGIC: Final = b"\x1f\x8b"


def _decompressed(raw: bytes) -> tuple[bytes, bool]:
    """The data of gzip bytes ``raw`` (every member) and whether the stream ended whole.

    A recording cut off (a killed process) has no gzip trailer: its data up to the
    last line flushed is still there, and is returned with False.
    """
    parts = []
    while raw:
        stream = zlib.decompressobj(wbits=31)
        parts.append(stream.decompress(raw))
        if not stream.eof:
            return b"".join(parts), False
        raw = stream.unused_data.lstrip(b"\0")  # gzip allows zero padding between members
    return b"".join(parts), True


def _lines(path: Path, raw: bytes) -> tuple[list[bytes], bool]:
    """The lines of the file's bytes (gzip found by its magic bytes, whatever its name),
    and whether the file ended whole (a complete gzip stream, a final newline)."""
    whole = True
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw, whole = _decompressed(raw)
        except zlib.error as exc:
            raise ValueError(
                f"mesa_llm_testing: cassette {path}: cannot read it (corrupt gzip data: {exc})"
            ) from None
    lines = raw.split(b"\n")
    last = lines.pop()  # b"" after a final newline; else a line cut off mid-write
    if last.strip():
        whole = False
        try:
            json.loads(last)
            lines.append(last)  # complete, only its newline missing
        except ValueError:
            pass
    return lines, whole


def is_cassette(path: str | Path) -> bool:
    """Whether the file at ``path`` starts with a cassette header line (plain or gzip)."""
    try:
        with Path(path).open("rb") as file:
            if file.read(2) == _GZIP_MAGIC:
                file.seek(0)
                first = gzip.GzipFile(fileobj=file).readline(1_000_000)
            else:
                file.seek(0)
                first = file.readline(1_000_000)
        return HEADER_KEY in json.loads(first)
    except (OSError, ValueError, TypeError, EOFError, zlib.error):
        return False


def read_cassette(path: str | Path) -> Cassette:
    """Read a cassette; ValueError naming the file and line for anything malformed.

    A recording cut off part-way (no gzip trailer, a last line written in part)
    keeps every complete line, with a warning saying how many.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(
            f"mesa_llm_testing: cassette {path}: no such file; record one with record_to(path), "
            f"--mesa-llm-record=PATH or 'mesa-llm-testing run --record PATH'"
        ) from None
    except OSError as exc:
        raise ValueError(f"mesa_llm_testing: cassette {path}: cannot read it ({exc})") from None
    lines, whole = _lines(path, raw)
    cassette: Cassette | None = None
    for number, line in enumerate(lines, 1):
        try:
            data = json.loads(line.decode("utf-8"))
            if cassette is None:
                if not isinstance(data, dict) or data.get(HEADER_KEY) != CASSETTE_FORMAT:
                    found = data.get(HEADER_KEY) if isinstance(data, dict) else None
                    raise ValueError(
                        f"not a cassette header (format {CASSETTE_FORMAT} expected, got {found!r})"
                    )
                cassette = Cassette(path, data)
            elif "blob" in data:
                cassette.blobs[data["blob"]] = data["value"]
            else:
                cassette.entries.append(_entry(data, number, cassette.blobs))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if type(exc) is ValueError:  # ours, saying what is wrong
                reason = str(exc)
            elif isinstance(exc, UnicodeDecodeError):
                reason = f"not UTF-8 text ({exc})"
            raise ValueError(
                f"mesa_llm_testing: cassette {path}, line {number}: {reason}"
            ) from None
    if cassette is None:
        raise ValueError(f"mesa_llm_testing: cassette {path} is empty (no header line)")
    if not whole:
        warnings.warn(
            f"mesa_llm_testing: cassette {path} ends part-way (a recording cut off); "
            f"kept its {len(lines)} complete lines ({len(cassette.entries)} calls)",
            stacklevel=2,
        )
    return cassette


def _entry(data: dict[str, Any], number: int, blobs: Mapping[str, Any]) -> CassetteEntry:
    """The call on line ``number``; ValueError if a blob it refers to was not written before it."""
    run, agent, step, call = data["key"]
    messages = tuple(data["messages"])
    for digest in (*messages, data.get("tools")):
        if digest is not None and digest not in blobs:
            raise ValueError(
                f"the call refers to blob {digest!r} (a message or tool list), but no blob "
                f"line before it holds it: the cassette is damaged; record it again"
            )
    return CassetteEntry(
        data.get("test", ""),
        (run, agent, step, call),
        data["model"],
        data["fingerprint"],
        messages,
        data.get("reply"),
        data.get("error"),
        number,
    )
