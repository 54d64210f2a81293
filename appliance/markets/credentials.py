"""API keys from the environment or a private file: never from the config, never printed.

A credentials file is TOML (``api_key``, ``secret``, optional ``password`` and ``uid``) that
only its owner may read (mode 0600 or stricter: anything readable or writable by group or
others is refused). Environment variables are ``<PREFIX>_API_KEY``, ``<PREFIX>_SECRET``,
``<PREFIX>_PASSWORD`` and ``<PREFIX>_UID``. Errors name the file or variable, never a value.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FIELDS = {"api_key": "apiKey", "secret": "secret", "password": "password", "uid": "uid"}


class CredentialsError(ValueError):
    """Credentials missing, unreadable or stored unsafely (the message holds no secret)."""


@dataclass(frozen=True)
class Credentials:
    """ccxt constructor keys. ``repr``/``str`` show only which keys are set."""

    values: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Credentials({', '.join(sorted(self.values)) or 'none'})"

    __str__ = __repr__

    def ccxt(self) -> dict[str, str]:
        """The constructor arguments (apiKey, secret, password, uid)."""
        return {_FIELDS[k]: v for k, v in self.values.items()}

    def secrets(self) -> list[str]:
        """Every value, for scrubbing text that must not carry them."""
        return [v for v in self.values.values() if v]

    def scrub(self, text: str) -> str:
        for value in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(value, "***")
        return text


def load_credentials(file: str | os.PathLike[str] | None, env: str | None) -> Credentials:
    """Credentials from ``file`` (checked private) or from ``env``-prefixed variables;
    empty Credentials when neither is given."""
    if file is not None and env is not None:
        raise CredentialsError("give a credentials file or an environment prefix, not both")
    if file is not None:
        return _from_file(Path(file))
    if env is not None:
        values = {
            k: os.environ[f"{env}_{k.upper()}"]
            for k in _FIELDS
            if f"{env}_{k.upper()}" in os.environ
        }
        missing = [f"{env}_{k.upper()}" for k in ("api_key", "secret") if k not in values]
        if missing:
            raise CredentialsError(f"environment variables {', '.join(missing)} are not set")
        return Credentials(values)
    return Credentials()


def _from_file(path: Path) -> Credentials:
    try:
        st = path.stat()
    except OSError as exc:
        raise CredentialsError(f"credentials file {path}: {exc.strerror or exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"credentials file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others "
            f"may read it; run 'chmod 600 {path}'"
        )
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        # The parser's message may quote the line, i.e. the secret: say only where.
        raise CredentialsError(f"credentials file {path} is not readable TOML") from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise CredentialsError(f"credentials file {path}: unknown keys {unknown}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v]
    if bad:
        raise CredentialsError(f"credentials file {path}: {bad} must be non-empty strings")
    missing = [k for k in ("api_key", "secret") if k not in data]
    if missing:
        raise CredentialsError(f"credentials file {path}: missing {missing}")
    return Credentials(dict(data))
