"""The API key as OpenAI clients send it: `Authorization: Bearer KEY`, or on a browser WebSocket the
subprotocol `openai-insecure-api-key.KEY` (browsers cannot set headers on a WebSocket)."""
from __future__ import annotations

import hmac
from typing import Optional

KEY_SUBPROTOCOL = "openai-insecure-api-key."


def key_matches(expected: Optional[str], given: Optional[str]) -> bool:
    return expected is None or (given is not None and hmac.compare_digest(expected.encode(), given.encode()))


def bearer(header: Optional[str]) -> Optional[str]:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def websocket_key(headers, subprotocols: list) -> Optional[str]:
    key = bearer(headers.get("authorization"))
    for p in subprotocols:
        if key is None and p.startswith(KEY_SUBPROTOCOL):
            key = p[len(KEY_SUBPROTOCOL):]
    return key
