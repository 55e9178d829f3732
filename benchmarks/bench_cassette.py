"""What a cassette replay costs per call, as a ratio against the seeded generator; cassette size.

Run: ``python benchmarks/bench_cassette.py [--calls N]``. One run; prints figures, asserts
nothing. A cassette of N calls (agents x steps, one call each, memory-like prompts) is
written with the recorder's writer, then the same calls are answered (a) by the seeded
generator and (b) from the cassette, both through ``FakeLLM.complete`` (the core, no
litellm) and through ``litellm.completion`` (the ``mesa-fake`` provider). Also prints the
size of a 50 agents x 100 steps cassette, plain and gzipped.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from mesa_llm._litellm import import_litellm
from mesa_llm.parallel_stepping import acting_as
from mesa_llm_testing import FakeLLM
from mesa_llm_testing._cassettes._format import CassetteWriter, fingerprint

MODEL = "openai/gpt-4o-mini"
SYSTEM = {"role": "system", "content": "You are a trader in a market. " * 20}


class _Model:
    steps = 0


class _Agent:
    def __init__(self, uid: int, model: Any) -> None:
        self.unique_id, self.model = uid, model


def _messages(agent: int, step: int) -> list[dict[str, str]]:
    seen = ", ".join(str(a) for a in range(agent, agent + 8))
    return [SYSTEM, {"role": "user", "content": f"step {step}: you see agents {seen}"}]


def write(path: Path, agents: int, steps: int) -> None:
    writer = CassetteWriter(path, {"seed": 0})
    source = FakeLLM(seed=1)
    for step in range(1, steps + 1):
        for agent in range(agents):
            messages = _messages(agent, step)
            body = source.complete(messages).to_openai(
                model="gpt-4o-mini", response_id=f"chatcmpl-{step}-{agent}", messages=messages
            )
            line = {
                "key": [1, agent, step, 0],
                "model": MODEL,
                "fingerprint": fingerprint(messages, None, None, None),
                "reply": body,
            }
            writer.write_call(line, messages, None)
    writer.close()


def run(fake: FakeLLM, agents: int, steps: int, answer: Any) -> float:
    model = _Model()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        model.steps = step
        for agent in range(agents):
            with acting_as(_Agent(agent, model)):
                answer(fake, _messages(agent, step))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    litellm = import_litellm()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "size.jsonl"
        write(big, 50, 100)
        write(Path(tmp) / "size.jsonl.gz", 50, 100)
        gz = (Path(tmp) / "size.jsonl.gz").stat().st_size
        print(f"50 agents x 100 steps: {big.stat().st_size / 1e6:.2f} MB, gzip {gz / 1e6:.2f} MB")
        path = Path(tmp) / "bench.jsonl"
        write(path, args.agents, args.steps)
        calls = args.agents * args.steps

        def direct(fake: FakeLLM, messages: Any) -> Any:
            return fake.complete(messages, model=MODEL)

        def via_litellm(fake: FakeLLM, messages: Any) -> Any:
            return litellm.completion(model=MODEL, messages=messages)

        for name, answer in (
            ("direct (FakeLLM.complete)", direct),
            ("litellm.completion", via_litellm),
        ):
            with FakeLLM(seed=1).activate() as generator:
                run(generator, 5, 2, answer)  # warm up
                seeded = run(generator, args.agents, args.steps, answer)
            with FakeLLM.from_cassette(path) as replay:
                replayed = run(replay, args.agents, args.steps, answer)
            print(
                f"{name}: generator {seeded / calls * 1e6:.0f} us/call, replay "
                f"{replayed / calls * 1e6:.0f} us/call, ratio {replayed / seeded:.2f}"
            )


if __name__ == "__main__":
    main()
