"""``mesa-llm-testing serve`` as a subprocess, serving a scenario run in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from warm_python import Run

from mesa_llm_testing._faults import FaultKind
from mesa_llm_testing.checks import EXPECTED_EXCEPTIONS

pytestmark = pytest.mark.subprocess  # see pyproject.toml's markers

TOKEN = "s3cret"
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

# A scenario model in its own process, its agents' ModuleLLMs pointed at the server.
CLIENT = textwrap.dedent(
    """
    import json, sys
    from mesa_llm import RetryPolicy
    from mesa_llm.parallel_stepping import parallel_stepping
    from mesa_llm_testing.scenarios import DEFAULT_SCENARIO, REGISTRY

    model = REGISTRY[DEFAULT_SCENARIO](
        seed=3, n_agents=6, llm_model="openai/gpt-4o-mini", retry=RetryPolicy(max_attempts=1),
        llm_kwargs={"api_base": sys.argv[1], "api_key": "sk-fake", "timeout": 1.0},
    )
    model.parallel_stepping = True
    failed = []
    with parallel_stepping("asyncio"):
        for _ in range(3):
            model.step()
            for report in model.step_reports:
                failed += [
                    [o.unique_id, model.steps, type(o.exception).__name__]
                    for o in report.outcomes if o.exception is not None
                ]
    print(json.dumps(failed))
    """
)


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mesa_llm_testing.cli", "serve", "--port", "0", "--faults",
         "0.3", "--seed", "3", "--kinds", "rate_limit,server_error,timeout", "--stall", "3",
         "--admin-token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def call(url: str, body: bytes | None = None, *, method: str = "GET", token: str = "") -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_answers_a_run_in_another_process_and_reports_its_faults(
    server: tuple[subprocess.Popen[str], str], warm_run: Run
) -> None:
    process, url = server
    root = url.removesuffix("/v1")
    # Malformed requests get 4xx; the server keeps serving.
    assert call(f"{url}/chat/completions", b"{broken", method="POST")[0] == 400
    assert call(f"{url}/chat/completions", b'{"model": "m"}', method="POST")[0] == 400
    assert call(f"{root}/nope")[0] == 404
    assert call(f"{url}/chat/completions")[0] == 405
    assert call(f"{root}/health") == (200, {"status": "ok"})
    assert call(f"{url}/models")[1]["data"][0]["id"] == "mesa-fake"
    assert call(f"{root}/admin/faults")[0] == 401  # the token is required
    assert call(f"{root}/admin/reset", b"", method="POST", token=TOKEN)[0] == 200

    # The client is a process of its own (a fork of the warm Python, litellm imported).
    client = warm_run([sys.executable, "-c", CLIENT, url], Path(__file__).parent.parent, 240)
    assert client.returncode == 0, client.stderr[-3000:]
    seen = {(uid, step): name for uid, step, name in json.loads(client.stdout.splitlines()[-1])}

    status, plan = call(f"{root}/admin/faults", token=TOKEN)
    assert status == 200 and plan["rate"] == 0.3 and plan["seed"] == 3
    injected = {(f["agent"], f["step"]): FaultKind(f["kind"]) for f in plan["injected"]}
    assert injected, "a 30% fault rate over 3 steps of 6 agents injected nothing"
    assert all(f["layer"] == "http" for f in plan["injected"])
    # With one attempt per call, every injected fault ended exactly that agent's step,
    # with the exception litellm raises for that failure from OpenAI.
    assert seen.keys() == injected.keys()
    for key, kind in injected.items():
        assert seen[key] in EXPECTED_EXCEPTIONS[kind], (key, kind, seen[key])
    stats = call(f"{root}/admin/stats", token=TOKEN)[1]
    assert sum(stats["faults"].values()) == len(plan["injected"])
    assert set(stats["latency_ms"]) == {"p50", "p95", "p99"}

    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0


def test_serve_rejects_bad_options_naming_them() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesa_llm_testing.cli", "serve", "--faults", "2"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--faults" in result.stderr and "from 0 to 1" in result.stderr
