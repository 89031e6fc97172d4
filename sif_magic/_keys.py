"""The signing key and secret files (standard library only: the worker uses this)."""

from __future__ import annotations

import errno
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


def load_key(key: str = "", key_file: str = "") -> bytes:
    """The HMAC key: ``key`` if given, else ``SIF_MAGIC_KEY``, else ``key_file`` (or
    the default file), created 0600 on first use.

    Whichever side runs first (a worker or a notebook) creates the file; a side that
    loses the race reads the winner's, so on a shared home both hold the same key."""
    if key:
        return key.encode()
    env_key = os.environ.get("SIF_MAGIC_KEY")
    if env_key and not key_file:
        return env_key.encode()
    path = Path(key_file).expanduser() if key_file else default_key_file()
    create_key_file(path)
    return read_secret_file(path, "signing key").encode()


def create_key_file(path: Path) -> bool:
    """Write a new random key to ``path`` (mode 600) unless it exists; True if this
    call made it. The file appears whole (written aside, then linked into place), so
    a process that loses the race never reads half a key."""
    if path.exists():
        return False
    try:
        return _create(path)
    except OSError as e:
        raise ConfigError(
            f"cannot create the signing key file {path}: {e.strerror}. Create it where this "
            "side can write, or pass --key-file / set SIF_MAGIC_KEY_FILE to a copy of the "
            "other side's key file (mode 600)"
        ) from None


def _create(path: Path) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs stands
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: exclusive create instead
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_in_place(path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _create_in_place(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True


def key_source(key: str = "", key_file: str = "") -> str:
    """Where ``load_key(key, key_file)`` takes the key from, for messages."""
    if key:
        return "the key option"
    if os.environ.get("SIF_MAGIC_KEY") and not key_file:
        return "SIF_MAGIC_KEY"
    return str(Path(key_file).expanduser() if key_file else default_key_file())


def worker_key_fix(source: str) -> str:
    """How to give a worker whose key comes from ``source`` the notebook's key."""
    if source == "SIF_MAGIC_KEY":
        return (
            "set SIF_MAGIC_KEY on the worker's side to the notebook's key (the content of its "
            "~/.sif_magic/key), or start the worker with --key-file FILE naming a copy of "
            "that file, then restart the worker"
        )
    return (
        f"copy the notebook side's key file (~/.sif_magic/key there, or its key_file) to "
        f"{source} on the worker's side with mode 600, or start the worker with --key-file "
        "FILE (or SIF_MAGIC_KEY_FILE=FILE) naming a copy of it, then restart the worker"
    )


def notebook_key_fix(source: str) -> str:
    """How to give a worker the key a notebook takes from ``source``."""
    if source == "SIF_MAGIC_KEY":
        return (
            "set SIF_MAGIC_KEY on the worker's side to this kernel's SIF_MAGIC_KEY, then "
            "restart the worker"
        )
    if source == "the key option":
        return (
            "put this kernel's key (its key option) in a file of mode 600 on the worker's "
            "side and start the worker with --key-file FILE"
        )
    return (
        f"copy this kernel's key file {source} to the worker's side as ~/.sif_magic/key "
        "(mode 600), or start the worker with --key-file FILE (or SIF_MAGIC_KEY_FILE=FILE) "
        "naming a copy of it, then restart the worker"
    )
