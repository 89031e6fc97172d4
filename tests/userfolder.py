"""A notebook's folder of the user's own modules: two modules that import a third, one
imported only inside a function, and a package with a class and a namespace
subpackage (issue 14's tests: ``test_usercode``, ``test_ship``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

MODULES = {
    "ucmain.py": """\
        import ucsecond
        from ucpkg import Point

        def helper(x):
            return ucsecond.twice(x) + 1

        def later(x):
            import uclate  # imported only when called
            return uclate.VALUE + x

        def origin():
            return Point(0, 0)

        def fail(x):
            raise ValueError(f"ucmain refuses {x}")
        """,
    "ucsecond.py": """\
        def twice(x):
            return 2 * x
        """,
    "uclate.py": "VALUE = 100\n",
    "ucpkg/__init__.py": "from .geom import Point\n",
    "ucpkg/geom.py": """\
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def moved(self, d):
                return Point(self.x + d, self.y + d)

            def __eq__(self, other):
                return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

            def __repr__(self):
                return f"Point({self.x}, {self.y})"
        """,
    "ucpkg/deep/leaf.py": "def name():\n    return 'leaf'\n",
}
NAMES = ("ucmain", "ucsecond", "uclate", "ucpkg", "ucpkg.geom", "ucpkg.deep", "ucpkg.deep.leaf")


def write_folder(folder: Path) -> Path:
    for name, text in MODULES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder
