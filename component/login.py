"""How a standalone component logs in to its router: WAMP-cryptosign or WAMP-ticket.

Cryptosign (an Ed25519 key; Crossbar's recommended method for backends) signs the router's
challenge, so the secret never crosses the wire; a ticket is a shared password and belongs on
``wss://`` or a local socket only. Key files are read in the formats operators already have:
OpenSSH (``ssh-keygen -t ed25519``), PKCS#8 PEM (``openssl genpkey -algorithm ed25519``),
Crossbar's key files (``private-key-ed25519: <hex>``), 64 hex digits or 32 raw bytes (a seed).
``make_key`` writes a new one.

A router that refuses the credentials (``refusal``) will refuse them on every retry, so the
caller ends instead of retrying forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["Credentials", "KeyFileError", "load_key", "make_key", "public_key", "refusal"]

# ABORT reasons a retry with the same credentials cannot change.
_REFUSED = {
    "wamp.error.not_authorized": "the router refused the credentials",
    "wamp.error.authentication_failed": "the router refused the credentials",
    "wamp.error.authorization_failed": "the router refused the credentials",
    "wamp.error.no_auth_method": "the router accepts none of the offered authentication methods "
                                 "(give --key FILE, or --authid and a ticket)",
    "wamp.error.no_such_realm": "the router has no such realm",
    "wamp.error.no_such_role": "the router has no such role",
    "wamp.error.no_such_principal": "the router knows no such principal",
}


class KeyFileError(ValueError):
    """A key file is missing, unreadable, or not an unencrypted Ed25519 private key."""


@dataclass(frozen=True)
class Credentials:
    """What to log in with: an Ed25519 key (cryptosign) or a ticket, optionally as ``authid``."""

    authid: str | None = None
    key: Ed25519PrivateKey | None = None
    ticket: str | None = None

    def authentication(self) -> dict[str, Any] | None:
        """The ``authentication`` argument of autobahn's ``Component`` (None: anonymous)."""
        if self.key is not None:
            seed = self.key.private_bytes_raw().hex()
            config: dict[str, Any] = {"privkey": seed}
            if self.authid:
                config["authid"] = self.authid
            return {"cryptosign": config}
        if self.ticket is not None:
            return {"ticket": {"authid": self.authid, "ticket": self.ticket}}
        return None

    def describe(self) -> str:
        if self.key is not None:
            return f"cryptosign key {public_key(self.key)}" + (
                f" as {self.authid}" if self.authid else "")
        if self.ticket is not None:
            return f"ticket as {self.authid}"
        return "anonymous"


def load_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``, in any of the formats above."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    text = data.decode("ascii", "replace")
    try:
        if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        elif "-----BEGIN" in text:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = _bare_key(data)
    except (ValueError, TypeError) as exc:  # wrong format, or a passphrase-protected key
        raise KeyFileError(f"key file {path}: not an unencrypted Ed25519 private key "
                           f"({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path}: a {type(key).__name__}, not an Ed25519 key")
    return key


def _bare_key(data: bytes) -> Ed25519PrivateKey:
    """Crossbar's key file (a ``private-key-ed25519: <hex>`` line), 64 hex digits alone, or
    the 32 raw bytes autobahn's ``CryptosignKey.from_file`` reads."""
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    text = data.decode("ascii", "replace").strip()
    if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "private-key-ed25519":
            return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(value.strip()))
    raise ValueError("no OpenSSH or PEM private key, no private-key-ed25519 line, no 64 hex "
                     "digits or 32 raw bytes")


def public_key(key: Ed25519PrivateKey) -> str:
    """The public key as Crossbar's ``authorized_keys`` lists it: 64 hex digits."""
    return key.public_key().public_bytes_raw().hex()


def make_key(path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 private key to ``path`` (OpenSSH format, mode 0600, never over an
    existing file) and return its public key for the router's ``authorized_keys``."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists: refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key(key)


def refusal(exc: BaseException, credentials: Credentials) -> str | None:
    """Why the router refused the session for good, or None if a retry may succeed."""
    reason = getattr(exc, "error", None)
    if not isinstance(reason, str) or reason not in _REFUSED:
        return None
    detail = exc.error_message() if hasattr(exc, "error_message") else reason
    return f"refused the login ({credentials.describe()}): {_REFUSED[reason]}: {detail}"
