"""What ended calls leave for the cyclic garbage collector, and the cycles that hold it.

Runs the real app in this process (a temp database, the Cloudonix emulator) with the
cyclic collector off, places calls one after the other, and once they have all ended asks
one collection with `gc.DEBUG_SAVEALL` what it found unreachable: everything a call's
reference counts did not free. Prints it per call by type, then the reference cycles
(strongly connected parts of that garbage), largest first, each with one path round it
(attribute, key or index names): break those at call end and the rest goes with them.

Run on demand:  python bench/call_garbage.py [--calls 3] [--conversation] [--cycles 15]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from common import ROOT  # noqa: F401  (puts the project on sys.path)

from agent_stream.config import Settings
from agent_stream.keys import CALLS, STORE
from agent_stream.server import create_app, runner_options, server_event_loop
from agent_stream.simulator import SimulatedCall, tone_ulaw
from agent_stream.speech.tts import EspeakSynthesizer
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import create_tenant, open_call, say, until


def type_name(obj: object) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module in ("builtins", "_asyncio") else f"{module}.{kind.__qualname__}"


def edge(a: object, b: object) -> str:
    """How `a` refers to `b`, as a short name."""
    if isinstance(a, dict):
        for key, value in a.items():
            if value is b:
                return f"[{key!r}]"
            if key is b:
                return "(key)"
    if isinstance(a, list | tuple | collections.deque):
        for i, value in enumerate(a):
            if value is b:
                return f"[{i}]"
    if isinstance(a, types.MethodType):
        return ".__self__" if a.__self__ is b else ".__func__"
    if isinstance(a, types.FrameType):
        for name, value in a.f_locals.items():
            if value is b:
                return f"<local {name} in {a.f_code.co_name}>"
        return f"<frame {a.f_code.co_name}>"
    if isinstance(a, types.CellType):
        return ".cell_contents"
    for name in ("__dict__", "__traceback__", "__context__", "__cause__", "tb_frame", "tb_next",
                 "f_back", "cr_frame", "__closure__", "__globals__", "__defaults__"):
        try:
            if getattr(a, name, None) is b:
                return f".{name}"
        except Exception:  # noqa: S112
            continue
    holder = getattr(a, "__dict__", None)
    if isinstance(holder, dict):
        for key, value in holder.items():
            if value is b:
                return f".{key}"
    for name in getattr(type(a), "__slots__", ()):
        if getattr(a, name, None) is b:
            return f".{name}"
    return " -> "


def strongly_connected(nodes: dict[int, object], out: dict[int, list[int]]) -> Iterator[list[int]]:
    """Tarjan's algorithm, iteratively (the garbage of a few calls is thousands deep)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(out[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(out[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                yield part


def shortest_cycle(start: int, members: set[int], out: dict[int, list[int]]) -> list[int]:
    """A shortest path from `start` back to itself inside one strongly connected part."""
    previous: dict[int, int] = {}
    queue = collections.deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for child in out[node]:
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if child in members and child not in seen:
                seen.add(child)
                previous[child] = node
                queue.append(child)
    return [start]


def report(garbage: list[object], calls: int, cycles: int, edges: bool = False) -> None:
    counts = collections.Counter(type_name(o) for o in garbage)
    print(f"unreachable after {calls} call(s): {len(garbage)} objects, {len(garbage) / calls:.0f} per call")
    for name, count in counts.most_common(40):
        print(f"  {count / calls:7.1f}  {name}")
    nodes = {id(o): o for o in garbage}
    out = {key: [id(r) for r in gc.get_referents(o) if id(r) in nodes] for key, o in nodes.items()}
    parts = [p for p in strongly_connected(nodes, out) if len(p) > 1 or p[0] in out[p[0]]]
    parts.sort(key=len, reverse=True)
    print(f"\nreference cycles (strongly connected parts): {len(parts)}")
    for part in parts[:cycles]:
        members = set(part)
        kinds = collections.Counter(type_name(nodes[m]) for m in part)
        print(f"\n  {len(part)} objects: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common(6)))
        # start the path at one of our own objects when there is one: that is where to cut
        ours = [m for m in part if type(nodes[m]).__module__.startswith("agent_stream")]
        start = (ours or part)[0]
        path = shortest_cycle(start, members, out)
        text = type_name(nodes[path[0]])
        for a, b in zip(path, path[1:], strict=False):
            text += f" {edge(nodes[a], nodes[b])} {type_name(nodes[b])}"
        print(f"    {text}")
        if edges:
            for a in part:
                for b in out[a]:
                    if b in members and type(nodes[a]).__module__ not in ("builtins",):
                        print(f"      {type_name(nodes[a])} {edge(nodes[a], nodes[b])} {type_name(nodes[b])}")


async def place_calls(calls: int, conversation: bool) -> list[object]:
    """Calls one after the other through the real app, each until its run has finished;
    what one collection then finds unreachable (before the app is torn down)."""
    emulator = CloudonixEmulator()
    emulator_runner = web.AppRunner(emulator.make_app(), access_log=None)
    await emulator_runner.setup()
    site = web.TCPSite(emulator_runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    folder = Path(tempfile.mkdtemp(prefix="agent-stream-garbage-"))
    settings = Settings(db_path=folder / "agent_stream.db",
                        api_base_urls={"cloudonix": f"http://127.0.0.1:{port}"})
    server = TestServer(create_app(settings))
    await server.start_server(**runner_options(settings))
    voice = EspeakSynthesizer(sample_rate=8000)
    try:
        app = server.app
        assert app is not None
        tenant = await create_tenant(app[STORE], emulator)
        async with aiohttp.ClientSession() as http:
            base = str(server.make_url("/"))
            for n in range(calls + 1):
                if n == 1:  # the first call loads and caches what lives as long as the process
                    gc.collect()
                    gc.disable()
                    gc.set_debug(gc.DEBUG_SAVEALL)
                call = await open_call(http, base, emulator, tenant.workflow.uuid,
                                       call_id=f"C-{n}", caller="+15555550100", called="+15555550199")
                call.start_reading()
                await call.handshake()
                closed = await (converse(call, voice) if conversation else hang_up(call))
                print(f"call {n}: closed with {closed}")
                await until(lambda: not app[CALLS].calls, timeout=30)
            await asyncio.sleep(0.5)  # the runs' last writes
            gc.garbage.clear()
            gc.collect()
            return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        await server.close()
        await emulator_runner.cleanup()


async def hang_up(call: SimulatedCall) -> tuple[int | None, str]:
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    return await call.wait_closed(timeout=30)


async def converse(call: SimulatedCall, voice: EspeakSynthesizer) -> tuple[int | None, str]:
    """The starter agent's conversation, as the voice benchmark's callers have it."""
    await until(lambda: "utt-1" in call.marks)
    await say(call, voice, "yes")
    await until(lambda: "utt-2" in call.marks)
    await say(call, voice, "goodbye")
    return await call.wait_closed(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="calls placed after a first one")
    parser.add_argument("--conversation", action="store_true",
                        help="greeting, 'yes', 'goodbye', the agent hangs up (else: the caller hangs up)")
    parser.add_argument("--cycles", type=int, default=15, help="cycles to show")
    parser.add_argument("--edges", action="store_true",
                        help="every reference inside each cycle shown, not only one path round it")
    args = parser.parse_args()
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    with asyncio.Runner(loop_factory=server_event_loop) as runner:
        garbage = runner.run(place_calls(args.calls, args.conversation))
    report(garbage, args.calls, args.cycles, args.edges)


if __name__ == "__main__":
    main()
