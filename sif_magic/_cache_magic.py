"""``%sif_cache``: show or clear the results kept for ``--resume`` (``cache_dir``).

Threads: the kernel thread only; no state of its own.
"""

from __future__ import annotations

from IPython.core.error import UsageError

from . import cache
from .config import get_config
from .errors import SifMagicError


def cache_magic(line: str) -> None:
    cfg = get_config()
    store = cache.store(cfg.cache_dir, cfg.cache_max_mb)
    words = line.split()
    try:
        if words == ["clear"]:
            removed = store.clear()
            print(f"removed {removed} file(s) of kept results from {store.path}")
            return
        if words:
            raise UsageError("usage: %sif_cache [clear]")
        info = store.info()
    except SifMagicError as e:
        raise UsageError(str(e)) from None
    mb = 1024 * 1024
    print(
        f"{info.path}: {info.size / mb:.1f} of {info.limit / mb:.0f} MB "
        f"(cache_max_mb), {info.calls} result(s) of {info.functions} function(s)"
    )
    print("%%sifmap ... --resume reuses them; %sif_cache clear removes them")
