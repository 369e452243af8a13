"""Conversation state: the interface and its implementations."""

from rulekit.store.base import State, Store
from rulekit.store.memory import MemoryStore

__all__ = ["MemoryStore", "State", "Store"]
