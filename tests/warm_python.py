"""A warm Python for tests that run commands: a fork server that has already imported litellm.

Every command a test starts with ``subprocess.run([sys.executable, ...])`` pays Python's start
and ``import litellm`` (seconds) again; most of the suite's time went there. ``WarmPython``
starts one helper process per test session that imports litellm, Mesa and both packages once,
then forks a child per command. The child is a separate process (its own memory, cwd, argv,
``__main__``, stdin/stdout/stderr, exit status, process group), so a command cannot see what
another did, and it exits as an interpreter does (non-daemon threads joined, ``atexit``
handlers, an uncaught exception prints its traceback and exits 1), except that it does not
tear down every loaded module and object (over a second with litellm loaded; the helper's
objects are frozen out of the children's garbage collections too), so a command must close
the files it writes. What it shares with its
siblings is the helper's imports, its environment at import time and its hash seed: tests
whose subject is a cold start (the console script entry point, what is imported before
litellm, packaging, a fresh hash seed) keep a real subprocess.

Forking a process with threads is unsafe, so the helper checks it has one thread before each
fork. Commands: ``[python, "-c", CODE, *args]``, ``[python, "-m", MODULE, *args]`` or a
console script of this interpreter (``[NAME, *args]``, found on the environment's PATH).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

#: ``run(argv, cwd, timeout=...)`` returning the command's ``CompletedProcess``.
Run = Callable[..., subprocess.CompletedProcess[str]]

PRELOAD = ("litellm", "mesa", "mesa_llm", "mesa_llm_testing", "mesa_llm_testing.cli", "pytest")


def command_env() -> dict[str, str]:
    """A user's environment for a command: no API keys, this interpreter's scripts on PATH."""
    return {
        **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


class WarmPython:
    """Runs commands as forks of one process that has imported litellm (see the module doc)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._tmp = tempfile.TemporaryDirectory(prefix="warm-python-")
        self._server = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            text=True,
        )
        assert self._server.stdout is not None
        ready = self._server.stdout.readline()
        if ready.strip() != "ready":
            self.close()
            raise RuntimeError(f"the warm Python did not start: {ready!r}")

    def run(
        self, argv: Sequence[str], cwd: Path, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)``."""
        assert self._server.stdin is not None and self._server.stdout is not None
        out, err = (Path(self._tmp.name) / name for name in ("stdout", "stderr"))
        request = {
            **self._resolve(argv),
            "cwd": str(cwd),
            "stdout": str(out),
            "stderr": str(err),
            "timeout": timeout,
        }
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        reply = json.loads(self._server.stdout.readline() or '{"error": "the warm Python died"}')
        if "error" in reply:
            raise RuntimeError(reply["error"])
        stdout, stderr = out.read_text(), err.read_text()
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(list(argv), timeout, stdout, stderr)
        return subprocess.CompletedProcess(list(argv), reply["returncode"], stdout, stderr)

    def _resolve(self, argv: Sequence[str]) -> dict:
        """The command as the helper runs it: ``-c`` code, a ``-m`` module or a script file."""
        if argv[0] == sys.executable:
            if len(argv) < 3 or argv[1] not in ("-c", "-m"):
                raise ValueError(f"warm Python runs `python -c` or `python -m`, not {argv!r}")
            return {"kind": argv[1], "target": argv[2], "args": list(argv[3:])}
        script = shutil.which(argv[0], path=self.env.get("PATH"))
        if script is None or not _is_our_script(Path(script)):
            raise ValueError(f"{argv[0]!r} is not a console script of {sys.executable}")
        return {"kind": "script", "target": script, "args": list(argv[1:])}

    def close(self) -> None:
        if self._server.poll() is None:
            assert self._server.stdin is not None
            self._server.stdin.close()  # end of requests: the helper exits
            try:
                self._server.wait(30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait(10)
        self._tmp.cleanup()


def _is_our_script(path: Path) -> bool:
    with path.open("rb") as file:
        first = file.readline().decode(errors="replace")
    return (
        first.startswith("#!")
        and Path(first[2:].strip()).resolve() == Path(sys.executable).resolve()
    )


# --------------------------------------------------------------------------- the helper process


def _serve() -> None:
    import gc
    import importlib
    import threading

    for name in PRELOAD:
        importlib.import_module(name)
    # What is loaded stays out of the children's garbage collections: they neither walk it
    # nor copy its pages (copy-on-write) by touching it.
    gc.freeze()
    requests, replies = sys.stdin, sys.stdout
    print("ready", file=replies, flush=True)
    for line in requests:
        request = json.loads(line)
        if threading.active_count() != 1:  # a fork would copy locks other threads hold
            reply = {"error": f"warm Python has threads: {threading.enumerate()}"}
        else:
            reply = _fork_and_wait(request)
        print(json.dumps(reply), file=replies, flush=True)


def _fork_and_wait(request: dict) -> dict:
    import time

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request)  # never returns
    deadline = time.monotonic() + request["timeout"]
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": False}
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)  # the child and anything it started
            os.waitpid(pid, 0)
            return {"returncode": -signal.SIGKILL, "timed_out": True}
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _child(request: dict) -> None:
    """Become the command: a process of its own, then run it as ``python`` would."""
    import importlib

    os.setsid()  # its own process group, so a timeout kills what it started too
    signal.signal(signal.SIGINT, signal.default_int_handler)
    write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], write),
                            (2, request["stderr"], write)):  # fmt: skip
        target = os.open(path, flags, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdin, for its life
    os.chdir(request["cwd"])
    importlib.invalidate_caches()
    try:
        _become(request["kind"], request["target"], request["args"])
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException as exc:  # uncaught: printed as the interpreter prints it
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    _exit(code)


def _become(kind: str, target: str, args: list[str]) -> None:
    import runpy
    import types

    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    if kind == "-c":
        sys.argv = ["-c", *args]
        sys.path[0] = ""
        exec(compile(target, "<string>", "exec"), main.__dict__)
    elif kind == "-m":
        sys.argv = [target, *args]
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:  # a console script of this interpreter
        sys.argv = [target, *args]
        sys.path[0] = str(Path(target).parent)
        runpy.run_path(target, run_name="__main__")


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _exit(code: int) -> None:
    """Exit as the interpreter does (non-daemon threads joined, then ``atexit`` handlers, then
    the standard streams flushed), without tearing down every module and object litellm
    loaded: that took over a second a command. A command must close the files it writes."""
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed by the command
            stream.flush()
    if code == -signal.SIGINT:  # as Python exits on KeyboardInterrupt: by the signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    _serve()
