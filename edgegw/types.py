"""Type aliases used across edgegw (the one place they are defined)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: Header lists keep order and repeats (Set-Cookie); names are lower-case bytes.
Headers = list[tuple[bytes, bytes]]

# ASGI
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
