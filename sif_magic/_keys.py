"""The signing key and secret files (standard library only: the worker uses this)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import ConfigError


def default_key_file() -> Path:
    return Path(os.environ.get("SIF_MAGIC_HOME", Path.home() / ".sif_magic")) / "key"


def read_secret_file(path: str | Path, what: str) -> str:
    """Read a secret from a file that only its owner may read."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        text = p.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} file {p}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the {what} file {p} can be read by others (mode {stat.S_IMODE(mode):o}): "
            f"run 'chmod 600 {p}'"
        )
    if not text:
        raise ConfigError(f"the {what} file {p} is empty")
    return text


def load_key(key: str = "", key_file: str = "", create: bool = True) -> bytes:
    """The HMAC key: ``key`` if given, else ``key_file`` (created 0600 on first use)."""
    if key:
        return key.encode()
    env_key = os.environ.get("SIF_MAGIC_KEY")
    if env_key and not key_file:
        return env_key.encode()
    path = Path(key_file).expanduser() if key_file else default_key_file()
    if not path.exists():
        if not create:
            raise ConfigError(
                f"no signing key: {path} does not exist. Copy the key file of the notebook "
                "side there (mode 600), or pass --key-file / set SIF_MAGIC_KEY_FILE"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return read_secret_file(path, "signing key").encode()
