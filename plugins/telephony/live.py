"""Screen-pops: live call events for the signed-in users' browsers.

Each browser tab of a user holds ``/api/telephony/live`` open (server-sent events); an event
published for that user reaches every one of its tabs. The bus lives in the server process that
received the call event, so it serves a deployment running one server process (``crm serve``'s
default); behind several processes, the call is still logged and the card found: only the
pop-up needs the same process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["LiveBus"]

#: Events a slow tab may fall behind by before the oldest are dropped.
QUEUE_SIZE = 100
#: How many ``once`` keys are remembered (recent calls).
ONCE_KEPT = 1000


class LiveBus:
    def __init__(self) -> None:
        self._listeners: dict[int, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._sent: dict[Any, None] = {}

    def publish(self, user_id: int, event: dict[str, Any], *, once: Any = None) -> int:
        """Send ``event`` to every open tab of the user; how many got it. With ``once``, an
        event of the same key sent before (lately) is not sent again."""
        if once is not None:
            if once in self._sent:
                return 0
            self._sent[once] = None
            if len(self._sent) > ONCE_KEPT:
                del self._sent[next(iter(self._sent))]
        queues = self._listeners.get(user_id, set())
        for queue in queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        return len(queues)

    def listeners(self, user_id: int) -> int:
        return len(self._listeners.get(user_id, ()))

    def listen(self, user_id: int) -> AsyncIterator[dict[str, Any]]:
        """The user's events as they come, until the consumer stops (``aclose()``). The user
        listens from this call on, before the first event is awaited (nothing sent in between
        is lost)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._listeners.setdefault(user_id, set()).add(queue)
        return _Listening(self, user_id, queue)

    def _forget(self, user_id: int, queue: asyncio.Queue[dict[str, Any]]) -> None:
        queues = self._listeners.get(user_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._listeners[user_id]


class _Listening:
    """What :meth:`LiveBus.listen` returns: an async iterator that stops listening when closed."""

    def __init__(self, bus: LiveBus, user_id: int, queue: asyncio.Queue[dict[str, Any]]):
        self._bus, self._user_id, self._queue = bus, user_id, queue

    def __aiter__(self) -> _Listening:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._bus._forget(self._user_id, self._queue)
