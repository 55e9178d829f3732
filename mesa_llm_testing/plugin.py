"""pytest plugin for mesa-llm models: fault options, the ``mesa_llm`` marker and fixtures.

Registered through the ``pytest11`` entry point. This module is wiring only: the
machinery lives in :mod:`mesa_llm_testing._pytest_support` (imported when pytest
configures), and litellm / respx are imported only by a test that uses
``fake_llm`` or ``fake_llm_http``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# Set when the plugin loads, before conftest files and test modules import litellm, so
# litellm never tries to download its price table (unless the user chose otherwise).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if TYPE_CHECKING:
    from mesa_llm_testing._fakellm import FakeLLM
    from mesa_llm_testing._faults import FaultPlan
    from mesa_llm_testing._pytest_support import SessionFaults


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mesa-llm", "mesa-llm fault injection")
    options = {
        "faults": ("RATE", "fraction of LLM calls that fault, from 0 to 1 (default 0)."),
        "seed": ("INT|last", "base seed of the fakes and faults (default: a fresh one)."),
        "fault-kinds": ("KINDS", "comma-separated fault kinds to inject (default: all)."),
        "trace": ("PATH", "write the injected faults as JSON at the end of the session."),
        "replay": ("PATH", "inject exactly the faults recorded in a --mesa-llm-trace file."),
        "record": (
            "PATH",
            "send fake_llm tests' LLM calls to the real provider and record "
            "them, per test, to the cassette PATH (.jsonl or .jsonl.gz).",
        ),
        "cassette": (
            "PATH",
            "answer fake_llm tests' LLM calls from a cassette recorded with --mesa-llm-record.",
        ),
    }
    for name, (metavar, help_text) in options.items():
        ini_name = "mesa_llm_" + name.replace("-", "_")
        group.addoption(f"--mesa-llm-{name}", dest=ini_name, metavar=metavar, help=help_text)
        parser.addini(ini_name, f"default for --mesa-llm-{name}: {help_text}", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mesa_llm(*, faults=None, kinds=None, seed=None, cassette=None): override the fault "
        "rate, fault kinds or per-test seed of the mesa-llm fixtures for this test (faults=0 "
        "turns faults off); cassette=PATH (relative to the test file) replays a cassette.",
    )
    # pydantic warns about litellm's TypedDicts when litellm builds its schemas; noise
    # in every test run that calls litellm, and nothing a model test can act on.
    config.addinivalue_line(
        "filterwarnings", "ignore:Items? .* (is|are) using the .ReadOnly. qualifier:UserWarning"
    )
    from mesa_llm_testing._pytest_support import SessionFaults

    SessionFaults.install(config)


def _session(request: pytest.FixtureRequest) -> SessionFaults:
    from mesa_llm_testing._pytest_support import SessionFaults

    return SessionFaults.of(request.config)


@pytest.fixture
def mesa_llm_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test: ``--mesa-llm-seed`` plus ``zlib.crc32`` of the test id.

    ``@pytest.mark.mesa_llm(seed=N)`` pins it to ``N``. Use it to seed anything
    random in a model test so a failure replays from the seed in the header.
    """
    return _session(request).seed_for(request.node)


@pytest.fixture
def llm_faults(request: pytest.FixtureRequest) -> FaultPlan:
    """The ``FaultPlan`` of this test: rate, kinds and seed from the options and marker.

    Script extra faults with ``llm_faults.at(agent=..., step=..., call=..., kind=...)``
    and inspect ``llm_faults.injected`` afterwards. Faults recorded in it are listed
    when the test fails, counted in the summary and written to ``--mesa-llm-trace``.
    """
    return _session(request).plan_for(request.node)


@pytest.fixture
def fake_llm(
    request: pytest.FixtureRequest, llm_faults: FaultPlan, mesa_llm_seed: int
) -> Iterator[FakeLLM]:
    """A ``FakeLLM`` answering every litellm completion in the process during the test.

    Any model string works (``openai/gpt-4o-mini`` runs unchanged) and faults follow
    ``llm_faults``. No request leaves the machine: any other attempt to reach a
    non-loopback address (an SDK client, ``requests``, a name lookup) raises
    ``NetworkBlockedError`` naming the host. Set ``return_value`` or ``side_effect``
    to script replies; ``calls`` records every request.

    With ``--mesa-llm-record=PATH`` the calls go to the real provider instead and are
    recorded to the cassette PATH, keyed by test id; with ``--mesa-llm-cassette=PATH``
    (or ``@pytest.mark.mesa_llm(cassette=PATH)``) they are answered from it, offline.
    """
    with _session(request).fake_for(request.node, llm_faults, mesa_llm_seed) as fake:
        yield fake


@pytest.fixture
def fake_llm_http(fake_llm: FakeLLM) -> Iterator[str]:
    """The ``api_base`` of an OpenAI-compatible HTTP endpoint served by ``fake_llm``.

    Pass it as ``api_base`` so requests go through litellm, the OpenAI SDK and httpx
    (served by respx) and faults arrive as real HTTP errors. Calls without this
    ``api_base`` are still answered by ``fake_llm``'s provider; other httpx requests
    fail as not mocked, so nothing leaves the machine.
    """
    with fake_llm.http() as api_base:
        yield api_base


@pytest.fixture(params=["asyncio", "threading"])
def stepping_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test twice, with ``"asyncio"`` and ``"threading"`` parallel stepping.

    Both runs get the same per-test seed and the same faults on the same calls, so
    their results can be compared. For the sequential reference too, parametrize it
    indirectly: ``@pytest.mark.parametrize("stepping_mode", ["sequential", "asyncio",
    "threading"], indirect=True)``. Automatic parallel stepping is disabled again
    after the test (the plugin does that after every test that turned it on).
    """
    from mesa_llm.parallel_stepping import MODES, disable_automatic_parallel_stepping

    if request.param not in MODES:
        raise ValueError(
            f"mesa_llm_testing: stepping_mode {request.param!r} is not a stepping mode; "
            f"valid modes: {', '.join(MODES)}"
        )
    yield request.param

    disable_automatic_parallel_stepping()
