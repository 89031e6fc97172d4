"""Remote tracebacks name the cell (or file) each frame's code was written in, with
its source line, whatever the installed cloudpickle writes as the shipped code's
file name (3.1.3 writes "<dynamic-code>", older releases the client's path).

Runs in any venv: run it under an older cloudpickle too (the workers are started
with this interpreter, so both sides use the same release).
"""

from __future__ import annotations

import functools
import json
import linecache
import sys
import types

import cloudpickle
import pytest

from sif_magic import RemoteError
from sif_magic._origins import code_origins
from sif_magic.runner.tracebacks import code_key

HELPERS = """\
import json

def helper_inv(x):
    return 1 / x

class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        raise ValueError(f"Scaler refuses {x}")

halve = lambda x: x / 0
"""

WORK = """\
%%sifmap range(6) -o out --errors collect
def work(x):
    def nested(v):
        raise KeyError(f"nested {v}")
    inner = lambda v: [][v]
    if x == 0:
        return nested(x)
    if x == 1:
        return inner(x)
    if x == 2:
        return helper_inv(0)
    if x == 3:
        return Scaler(2).apply(x)
    if x == 4:
        return halve(x)
    return json.loads("")
"""


@pytest.fixture
def shell(map_shell):  # noqa: ANN001, ANN201
    """The IPython shell, its %%sifmap on the local backend or on two real workers."""
    return map_shell


def test_every_shipped_frame_names_its_cell_and_line(shell) -> None:
    assert shell.run_cell(HELPERS).error_in_exec is None
    r = shell.run_cell(WORK)
    assert r.error_in_exec is None
    out = shell.user_ns["out"]
    helpers_cell = shell.user_ns["helper_inv"].__code__.co_filename
    work_cell = shell.user_ns["work"].__code__.co_filename
    assert helpers_cell != work_cell and all(isinstance(e, RemoteError) for e in out)

    expected = {  # call -> (exception, the frames below work: function, cell, source line)
        0: ("KeyError", [("nested", work_cell, 'raise KeyError(f"nested {v}")')]),
        1: ("IndexError", [("<lambda>", work_cell, "inner = lambda v: [][v]")]),
        2: ("ZeroDivisionError", [("helper_inv", helpers_cell, "return 1 / x")]),
        3: ("ValueError", [("apply", helpers_cell, 'raise ValueError(f"Scaler refuses {x}")')]),
        4: ("ZeroDivisionError", [("<lambda>", helpers_cell, "halve = lambda x: x / 0")]),
    }
    calls = ["return nested(x)", "return inner(x)", "return helper_inv(0)"]
    calls += ["return Scaler(2).apply(x)", "return halve(x)"]
    for i, (ename, below) in expected.items():
        err = out[i]
        assert err.ename == ename, err
        got = [(f.name, f.filename, f.line) for f in err.frames]
        assert got == [("work", work_cell, calls[i]), *below], err
        shown = "\n".join(err._render_traceback_())
        assert "<dynamic-code>" not in shown and below[-1][2] in shown
        assert f", line {err.frames[-1].lineno}, in " in shown


def test_a_frame_of_an_installed_module_keeps_its_own_file_and_line(shell) -> None:
    assert shell.run_cell(HELPERS).error_in_exec is None
    assert shell.run_cell(WORK).error_in_exec is None
    err = shell.user_ns["out"][5]
    assert err.ename == "json.decoder.JSONDecodeError"
    first, *rest = err.frames
    assert (first.name, first.line) == ("work", 'return json.loads("")')
    decoder = json.decoder.JSONDecoder.raw_decode.__code__.co_filename
    assert [f.filename for f in rest] == [json.__file__, decoder, decoder]
    last = rest[-1]
    # the line the worker read from its own copy of the module
    assert last.name == "raw_decode" and "JSONDecodeError" in last.line
    assert last.line == linecache.getline(decoder, last.lineno).strip()


def _shipped() -> types.FunctionType:
    def nested(v: int) -> int:
        return [][v]

    class Local:
        def method(self, v: int) -> int:
            return nested(v)

    twice = lambda v: Local().method(v) * 2  # noqa: E731

    def work(x: int) -> int:
        return twice(x) + sum(y for y in range(x))

    return work


def _codes(fn: types.FunctionType) -> list[types.CodeType]:
    found, todo = [], [fn.__code__]
    while todo:
        code = todo.pop()
        found.append(code)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return found


def test_the_key_of_shipped_code_survives_pickling_and_any_file_name() -> None:
    work = _shipped()
    origins = code_origins(work)
    # work, its generator expression, the lambda, the local class's method, nested
    assert len(origins) == 5 and set(origins.values()) == {__file__}
    # the code the worker runs: this cloudpickle's copy, whatever file it says
    copy = cloudpickle.loads(cloudpickle.dumps(work))
    assert set(code_origins(copy)) == set(origins)
    for code in _codes(work):
        assert code_key(code.replace(co_filename="<any pickler>")) == code_key(code)


def test_the_walk_finds_code_behind_partials_instances_and_much_data() -> None:
    def a(x: int) -> int:
        return x

    def b(x: int) -> int:
        return x

    class Holder:
        def __init__(self) -> None:
            self.callback = b

        @staticmethod
        def static(x: int) -> int:
            return x

        @property
        def prop(self) -> int:
            return 1

    data = [[float(i)] * 4 for i in range(50_000)]  # more than the walk looks at
    part, holder = functools.partial(a, 1), Holder()

    def work(x: int) -> object:
        return data[x], part(), holder.callback(x), Holder.static(x), holder.prop

    origins = code_origins(work)
    shipped = [work, a, b, Holder.__init__, Holder.static, Holder.prop.fget]
    assert all(code_key(f.__code__) in origins for f in shipped)  # type: ignore[attr-defined]


def test_keys_tell_apart_code_that_differs_only_in_constants() -> None:
    a, b = (lambda x: x * 2), (lambda x: x * 3)  # noqa: E731 - one line, one name
    assert a.__code__.co_firstlineno == b.__code__.co_firstlineno
    assert code_key(a.__code__) != code_key(b.__code__)


def test_installed_modules_are_not_in_the_table() -> None:
    assert code_origins(json.dumps) == {}

    def uses_json(x: object) -> str:
        return json.dumps(x)

    assert list(code_origins(uses_json)) == [code_key(uses_json.__code__)]


def test_a_module_registered_by_value_is_in_the_table(tmp_path, monkeypatch) -> None:
    (tmp_path / "sif_tb_helpers.py").write_text("def helper(x):\n    return 1 / x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sif_tb_helpers

    def work(x: int) -> float:
        return sif_tb_helpers.helper(x)

    key = code_key(sif_tb_helpers.helper.__code__)
    assert key not in code_origins(work)  # pickled by reference: the worker imports it
    cloudpickle.register_pickle_by_value(sif_tb_helpers)
    try:
        assert code_origins(work)[key] == str(tmp_path / "sif_tb_helpers.py")
    finally:
        cloudpickle.unregister_pickle_by_value(sif_tb_helpers)
        sys.modules.pop("sif_tb_helpers", None)
