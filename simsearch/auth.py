"""API keys: bearer tokens with a role, loaded at start, compared in constant time.

Two roles: `read` (queries, track info) and `write` (also adds and deletes
tracks).  Keys come from a file (one `ROLE TOKEN` per line, `#` comments) and/or
the environment variable SIMSEARCH_API_KEYS (`ROLE:TOKEN` items separated by
commas).  Only the SHA-256 of each token is kept in memory; a presented token is
hashed and compared with every stored digest by `hmac.compare_digest`, without
an early exit, so the time taken says nothing about which key came close.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ParameterError

ENV_VAR = "SIMSEARCH_API_KEYS"
ROLES = ("read", "write")
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class KeyRing:
    digests: tuple[tuple[bytes, str], ...] = ()

    def __len__(self) -> int:
        return len(self.digests)

    def role_of(self, token: str) -> str | None:
        """The role of `token`, or None when it is no key of ours."""
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for digest, role in self.digests:
            if hmac.compare_digest(digest, presented):
                found = role
        return found

    def roles(self) -> dict[str, int]:
        return {r: sum(1 for _, role in self.digests if role == r) for r in ROLES}


def allows(role: str | None, needed: str) -> bool:
    """`write` keys may do everything `read` keys may."""
    return role == needed or role == "write"


def _entry(role: str, token: str, where: str) -> tuple[bytes, str]:
    role, token = role.strip().lower(), token.strip()
    if role not in ROLES:
        raise ParameterError(f"{where}: role must be one of {ROLES}, not {role!r}")
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or any(c.isspace() for c in token):
        raise ParameterError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} printable characters "
                             "without spaces (generate one with: python3 -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))')")
    return hashlib.sha256(token.encode()).digest(), role


def load_keys(keys_file: str | os.PathLike | None = None, environ=os.environ) -> KeyRing:
    """The keys from `keys_file` and from $SIMSEARCH_API_KEYS (both optional)."""
    entries = []
    if keys_file is not None:
        path = Path(keys_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ParameterError(f"cannot read the keys file {path}: {exc.strerror}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ParameterError(f"{path}:{n}: expected 'ROLE TOKEN'")
            entries.append(_entry(parts[0], parts[1], f"{path}:{n}"))
    for item in environ.get(ENV_VAR, "").split(","):
        if item.strip():
            role, sep, token = item.partition(":")
            if not sep:
                raise ParameterError(f"{ENV_VAR}: expected ROLE:TOKEN items separated by commas")
            entries.append(_entry(role, token, ENV_VAR))
    return KeyRing(tuple(entries))
