"""Binance's request authentication, as the simulator checks it: the API key, the
HMAC-SHA256 signature and the timestamp within ``recvWindow``.

REST signs the query string and body as sent; the WebSocket API signs every parameter but
the signature, sorted by name. Failures are Binance's own errors (rules.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from appliance.exsim.rules import BinanceError, bad_key, bad_signature, mandatory

DEFAULT_RECV_WINDOW_MS = 5000


def signature_valid(payload: str, signature: str, secret: str) -> bool:
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


def _strip_signature(raw: str) -> tuple[str, str | None]:
    """(raw without its ``signature`` parameter, the signature) of a query string or body."""
    kept, sig = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            sig = part.partition("=")[2]
        else:
            kept.append(part)
    return "&".join(kept), sig


class RequestAuth:
    """The simulator's one API key and secret, and the checks a request must pass;
    ``clock`` is the exchange's time in milliseconds."""

    def __init__(self, api_key: str, api_secret: str, clock: Callable[[], int]) -> None:
        self.api_key, self._secret = api_key, api_secret
        self._clock = clock

    def check_key(self, key: str | None) -> None:
        if not key:
            raise BinanceError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self.api_key):
            raise bad_key()

    def signed_params(self, query_string: str, body_text: str) -> dict[str, str]:
        """The parameters of a signed REST request (query and body), once its signature
        and timestamp passed."""
        query, sig_q = _strip_signature(query_string)
        body, sig_b = _strip_signature(body_text)
        signature = sig_q or sig_b
        if not signature:
            raise mandatory("signature")
        if not signature_valid(query + body, signature, self._secret):
            raise bad_signature()
        params = dict(parse_qsl(query)) | dict(parse_qsl(body))
        self._check_time(params)
        return params

    def check_ws_signature(self, params: dict[str, Any]) -> None:
        """WebSocket API signing: every parameter but the signature, sorted by name."""
        self.check_key(params.get("apiKey"))
        signature = params.get("signature")
        if not signature:
            raise mandatory("signature")
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
        if not signature_valid(payload, str(signature), self._secret):
            raise bad_signature()
        self._check_time({k: str(v) for k, v in params.items()})

    def _check_time(self, params: dict[str, str]) -> None:
        if not params.get("timestamp"):
            raise mandatory("timestamp")
        ts, window = int(params["timestamp"]), int(params.get("recvWindow", DEFAULT_RECV_WINDOW_MS))
        now = self._clock()
        if ts > now + 1000 or now - ts > window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
