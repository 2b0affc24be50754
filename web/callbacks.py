"""Decorators a chat module uses to hook into the session lifecycle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from web.message import Message

Hook = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class Hooks:
    chat_start: Hook | None = None
    message: Callable[[Message], Awaitable[Any]] | None = None
    chat_end: Hook | None = None


#: The hooks of the chat module this process serves (one chat module per process).
hooks = Hooks()


def on_chat_start(func: Hook) -> Hook:
    """Run once per session, when its first socket connects (not again when it resumes)."""
    hooks.chat_start = func
    return func


def on_message(func: Callable[[Message], Awaitable[Any]]) -> Callable[[Message], Awaitable[Any]]:
    """Run for every `client_message` the user sends, with the message as argument."""
    hooks.message = func
    return func


def on_chat_end(func: Hook) -> Hook:
    """Run once when a session ends: its grace period passed without a resume anywhere."""
    hooks.chat_end = func
    return func
