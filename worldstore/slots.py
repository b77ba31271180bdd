"""Agent slots: a changing population of agents, with their own ids, in a world of fixed agent count.

A world's agent and observation layers have one row per agent *slot*
(``WorldSpec.agents`` of them). Simulations such as AgentFarm add and remove
agents as they run and name them by strings (``"agent_17"``) or by integers
that are not row numbers. :class:`AgentSlots` maps those ids to slots: an
agent added takes the lowest free slot, an agent removed frees its slot, and
the next agent added reuses it. It knows nothing of worlds; its
:meth:`AgentSlots.slots_of` gives the ``agent_ids`` that ``World.observe``
(``into=`` included) and ``World.remember`` take.

What a freed slot's rows hold is up to the simulation: they keep the last
agent's memory until written (``AgentSlots.add`` returns the slot, so a new
agent's rows can be cleared there). The map lives in the process; save
``slots.to_dict()`` beside the world if other processes need it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any, Union

import numpy as np

from .errors import AgentSlotError, UnknownAgentError

AgentId = Union[str, int]


class AgentSlots:
    """A map of agent ids (str or int) to slots ``0..capacity-1``: add, remove, reuse.

    >>> slots = AgentSlots(3)
    >>> slots.add("wolf"), slots.add("sheep"), slots.add(42)
    (0, 1, 2)
    >>> slots.remove("wolf")
    0
    >>> slots.add("lamb"), slots.slots_of(["sheep", "lamb", 42]).tolist(), len(slots), slots.free
    (0, [1, 0, 2], 3, 0)
    """

    def __init__(self, capacity: int, ids: Iterable[AgentId] = ()):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 0:
            raise AgentSlotError(f"capacity must be an integer >= 0 (the world's agent count), got {capacity!r}")
        self._capacity = int(capacity)
        self._slot: dict[AgentId, int] = {}
        self._id: list[AgentId | None] = [None] * self._capacity
        self._free = list(range(self._capacity))  # a heap: the lowest free slot first
        for agent in ids:
            self.add(agent)

    @property
    def capacity(self) -> int:
        """How many agents fit (the world's agent count)."""
        return self._capacity

    @property
    def free(self) -> int:
        """How many slots are free."""
        return len(self._free)

    @property
    def ids(self) -> list[AgentId]:
        """The agents' ids, in slot order."""
        return [agent for agent in self._id if agent is not None]

    def add(self, agent: AgentId) -> int:
        """Give ``agent`` the lowest free slot and return it.

        :class:`AgentSlotError` if the map is full (saying its capacity), the id
        is already there, or it is not a str or int.
        """
        agent = _check_id(agent)
        if agent in self._slot:
            raise AgentSlotError(f"agent {agent!r} already holds slot {self._slot[agent]}; remove it first")
        if not self._free:
            raise AgentSlotError(f"no free slot for agent {agent!r}: all {self._capacity} slots are taken; remove "
                                 "an agent, or create the world with more agents (its agent count is the number "
                                 "of slots)")
        slot = heapq.heappop(self._free)
        self._slot[agent] = slot
        self._id[slot] = agent
        return slot

    def remove(self, agent: AgentId) -> int:
        """Free ``agent``'s slot and return it (:class:`UnknownAgentError` if it holds none)."""
        slot = self[agent]
        del self._slot[agent]
        self._id[slot] = None
        heapq.heappush(self._free, slot)
        return slot

    def __getitem__(self, agent: AgentId) -> int:
        try:
            return self._slot[agent]
        except (KeyError, TypeError):
            raise UnknownAgentError(f"agent {agent!r} holds no slot ({len(self)} agents are in the map); add it "
                                    "first") from None

    def slots_of(self, agents: Iterable[AgentId]) -> np.ndarray:
        """The slots of ``agents``, as an int64 array: the ``agent_ids`` of observe and remember."""
        if isinstance(agents, (str, bytes)):
            raise AgentSlotError(f"slots_of takes a list of ids, got the single id {agents!r}; wrap it in a list")
        if isinstance(agents, np.ndarray):
            agents = agents.tolist()
        return np.fromiter((self[agent] for agent in agents), dtype=np.int64)

    def agent_at(self, slot: int) -> AgentId | None:
        """The id of the agent in ``slot``, or None if it is free."""
        if not 0 <= slot < self._capacity:
            raise AgentSlotError(f"slot {slot!r} is outside 0..{self._capacity - 1}")
        return self._id[slot]

    def __contains__(self, agent: object) -> bool:
        try:
            return agent in self._slot
        except TypeError:
            return False

    def __iter__(self) -> Iterator[AgentId]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self._slot)

    def __repr__(self) -> str:
        return f"<worldstore agent slots: {len(self)} of {self._capacity} taken>"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form: ``{"capacity": n, "slots": [[id, slot], ...]}``; :meth:`from_dict` reverses it."""
        return {"capacity": self._capacity, "slots": [[agent, slot] for slot, agent in enumerate(self._id)
                                                      if agent is not None]}

    @classmethod
    def from_dict(cls, data: Any) -> "AgentSlots":
        """The map :meth:`to_dict` described, each agent in its slot again."""
        try:
            slots = cls(data["capacity"])
            pairs = [(_check_id(agent), int(slot)) for agent, slot in data["slots"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentSlotError(f"not an agent-slot map: {exc}") from None
        for agent, slot in pairs:
            if not 0 <= slot < slots._capacity or slots._id[slot] is not None or agent in slots._slot:
                raise AgentSlotError(f"agent-slot map: slot {slot} of agent {agent!r} is taken or out of range")
            slots._slot[agent], slots._id[slot] = slot, agent
        slots._free = [slot for slot in range(slots._capacity) if slots._id[slot] is None]
        return slots


def _check_id(agent: Any) -> AgentId:
    if isinstance(agent, np.integer):
        agent = int(agent)
    if isinstance(agent, bool) or not isinstance(agent, (str, int)):
        raise AgentSlotError(f"agent ids are str or int, got {agent!r} ({type(agent).__name__})")
    return agent
