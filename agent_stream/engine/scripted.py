"""The scripted engine (the embedded default, no LLM): say each node's text, match the
caller's reply to the outgoing edges by phrase or keypress, re-prompt once, then fall back.

The caller's speech is decoded against a grammar of the phrases the current node expects;
speaking, barge-in, timers and ending the call are the shared `VoiceAgent`'s.
"""
from __future__ import annotations

from typing import Any

from ..pipeline.transcript import Utterance
from . import Edge, Node, render
from .base import GOODBYE, NOT_UNDERSTOOD, STILL_THERE, VoiceAgent

__all__ = ["GOODBYE", "NOT_UNDERSTOOD", "STILL_THERE", "ScriptedAgent"]


class ScriptedAgent(VoiceAgent):
    """Walks one workflow for one call by phrases and digits."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._misses = 0

    async def _entered(self, node: Node, utterance: Utterance | None) -> None:
        """A node with nowhere to go ends the call; otherwise wait for the caller."""
        self._misses = 0
        if not node.edges:
            await self._wait_played(utterance)
            await self._end("agent_hangup")
        else:
            self._listen_after(utterance)

    async def _heard_speech(self, audio: bytes, start_ms: int, end_ms: int) -> None:
        phrases = self._node.phrases
        text = await self._stt.recognize(audio, phrases) if phrases else None
        async with self._lock:
            if self._finished:
                return
            self._transcript.caller_said(text or "(not understood)", start_ms, end_ms)
            self._log.info("caller said %r", text)
            edge = next((e for e in self._node.edges if text and e.matches_words(text)), None)
            await self._follow(edge)

    async def _heard_digit(self, digit: str) -> None:
        async with self._lock:
            if self._finished:
                return
            at = self._transcript.now_ms()
            self._transcript.caller_said(f"(pressed {digit})", at, at)
            edge = next((e for e in self._node.edges if e.dtmf == digit), None)
            await self._follow(edge)

    async def _follow(self, edge: Edge | None) -> None:
        """Take the matched edge; otherwise re-prompt once, then take the fallback."""
        if edge is not None:
            await self._enter(self._workflow.nodes[edge.target])
            return
        self._misses += 1
        fallback = self._node.fallback
        if self._misses > 1 and fallback is not None:
            await self._enter(self._workflow.nodes[fallback.target])
        elif self._misses > 2:
            await self._say(GOODBYE, False, wait=True)
            await self._end("agent_hangup")
        else:
            text = f"{NOT_UNDERSTOOD} {render(self._node.say, self._context)}"
            self._listen_after(await self._say(text, self._node.interruptible))
