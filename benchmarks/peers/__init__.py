"""One small runner module per tool compared in ``benchmarks/run.py``.

Each runner is started as ``python -m benchmarks.peers.NAME --scenarios s1,... --out F
--params JSON`` in a fresh process, starts what it needs (workers, a cluster),
measures, stops everything it started (by pid, also on errors) and writes its
measurements as JSON to ``F``. See ``_common.py`` for the shared pieces.
"""
