"""The custom widgets' Python side, talking to a recording comm (no browser).

The browser side is in tests/browser/test_widgets_browser.py.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from pathlib import Path
from typing import Any

import comm
import pytest
from comms import RecordingComm

from sif_magic.protocol import STATE_NAMES
from sif_magic.widgets import MODULE_NAME, MODULE_VERSION, CallGrid, LogView

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comm, "create_comm", lambda **kw: RecordingComm(**kw))


def _comm(widget: Any) -> RecordingComm:
    assert isinstance(widget.comm, RecordingComm)
    return widget.comm


def _state_bytes(buffers: list[Any]) -> bytes:
    (buf,) = buffers
    return zlib.decompress(bytes(buf))


# -- front-end module -----------------------------------------------------------


def test_module_name_and_version_match_the_labextension() -> None:
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert package["name"] == MODULE_NAME
    assert MODULE_VERSION == "^" + package["version"]
    ts = (ROOT / "labextension" / "src" / "version.ts").read_text()
    assert f"MODULE_NAME = '{package['name']}'" in ts
    assert f"MODULE_VERSION = '{package['version']}'" in ts
    assert package["jupyterlab"]["outputDir"] == "../sif_magic/labextension"
    assert package["jupyterlab"]["sharedPackages"]["@jupyter-widgets/base"] == {
        "bundled": False,
        "singleton": True,
    }


def test_state_names_and_colours_of_the_labextension_are_the_python_ones() -> None:
    """One source: the grid in the browser and the text/HTML views colour each state
    code alike (protocol.STATE_NAMES order, display.COLOURS values)."""
    from sif_magic.display import COLOURS

    ts = (ROOT / "labextension" / "src" / "states.ts").read_text()
    names = ts.split("STATE_NAMES: readonly string[] = [", 1)[1].split("]", 1)[0]
    assert [n.strip().strip("'") for n in names.split(",") if n.strip()] == list(STATE_NAMES)
    block = ts.split("STATE_COLOURS: readonly string[] = [", 1)[1].split("];", 1)[0]
    pairs = re.findall(r"'(#[0-9a-fA-F]{6})',?\s*//\s*(\w+)", block)
    assert [name for _, name in pairs] == list(STATE_NAMES)
    assert [c.lower() for c, _ in pairs] == [COLOURS[name].lower() for name in STATE_NAMES]
    assert set(COLOURS) == set(STATE_NAMES)


# -- CallGrid ---------------------------------------------------------------------


def test_callgrid_opens_with_all_calls_queued() -> None:
    grid = CallGrid(5)
    msg_type, data, buffers = _comm(grid).sent[0]
    assert msg_type == "comm_open"
    state = data["state"]
    assert state["_model_module"] == "sif-magic" and state["_view_name"] == "CallGridView"
    assert state["n"] == 5 and state["selected"] == -1
    assert data["buffer_paths"] == [["states_z"]]
    assert _state_bytes(buffers) == bytes(5)
    assert grid.states == bytes(5)


def test_set_states_sends_one_compressed_update_and_skips_unchanged() -> None:
    grid = CallGrid(4)
    c = _comm(grid)
    assert grid.set_states(bytes([2, 3, 1, 0])) is True
    assert grid.set_states(bytearray([2, 3, 1, 0])) is False  # unchanged: nothing sent
    (update,) = c.updates()
    data, buffers = update
    assert data["state"] == {} and data["buffer_paths"] == [["states_z"]]
    assert _state_bytes(buffers) == bytes([2, 3, 1, 0])
    assert grid.counts() == {
        "queued": 1, "running": 1, "done": 1, "failed": 1,
        "cancelled": 0, "retrying": 0, "lost": 0, "finishing": 0,
    }  # fmt: skip
    assert grid.updates_sent == 1


def test_set_states_of_another_length_resizes_in_the_same_message() -> None:
    grid = CallGrid(2)
    grid.set_states(bytes([2, 2, 0]))
    ((data, buffers),) = _comm(grid).updates()
    assert data["state"] == {"n": 3} and data["buffer_paths"] == [["states_z"]]
    assert _state_bytes(buffers) == bytes([2, 2, 0])


def test_resend_repeats_the_table_even_when_unchanged() -> None:
    grid = CallGrid(3)
    grid.set_states(bytes([2, 3, 2]))
    grid.resend()
    updates = _comm(grid).updates()
    assert len(updates) == 2
    data, buffers = updates[-1]
    assert data["state"] == {"n": 3, "selected": -1, "progress": {}}
    assert _state_bytes(buffers) == bytes([2, 3, 2])


def test_negative_n_is_refused() -> None:
    with pytest.raises(ValueError, match="n >= 0"):
        CallGrid(-1)


def test_100k_call_run_stays_small_on_the_wire() -> None:
    """A simulated 100,000-call run, pushed 100 times: bytes and messages sent."""
    n = 100_000
    rng = random.Random(3)
    grid = CallGrid(n)
    c = _comm(grid)
    states = bytearray(n)
    done = 0
    for _ in range(100):
        for i in range(done, min(n, done + 1000)):
            states[i] = 3 if rng.random() < 0.01 else 2
        done = min(n, done + 1000)
        states[done : done + 50] = bytes([1]) * len(states[done : done + 50])
        grid.set_states(states)
    updates = c.updates()
    assert len(updates) == 100
    sizes = [len(bytes(b[0])) for _, b in updates]
    # The table itself is 100,000 bytes; the scattered 1% failures keep it ~10 KB at most.
    assert max(sizes) < 16_000, sizes
    assert _state_bytes(updates[-1][1]) == bytes(states)


def test_describe_round_trip_answers_the_asking_view() -> None:
    grid = CallGrid(3, describe=lambda i: f"call {i} on host-{i}")
    c = _comm(grid)
    c.from_frontend(
        {"method": "custom", "content": {"type": "describe", "index": 2, "req": 7, "view": "v1"}}
    )
    assert c.customs() == [
        {"type": "description", "index": 2, "req": 7, "view": "v1", "text": "call 2 on host-2"}
    ]


def test_describe_default_and_failures_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    grid = CallGrid(2)
    grid.set_states(bytes([3, 0]))
    assert grid.describe(0) == "call 0 · failed"
    assert grid.describe(5) == "no call 5"

    def broken(i: int) -> str:
        raise KeyError(i)

    bad = CallGrid(2, describe=broken)
    text = bad.describe(1)
    assert text.startswith("call 1 · queued") and "describe failed" in text
    assert "describe(1) failed" in caplog.text


def test_click_in_the_frontend_sets_selected_and_calls_back() -> None:
    grid = CallGrid(10)
    seen: list[int] = []
    grid.on_select(seen.append)
    c = _comm(grid)
    c.from_frontend({"method": "update", "state": {"selected": 4}, "buffer_paths": []})
    assert grid.selected == 4 and seen == [4]
    grid.on_select(seen.append, remove=True)
    c.from_frontend({"method": "update", "state": {"selected": 5}, "buffer_paths": []})
    assert seen == [4]


def test_control_requests_answer_a_hover_and_tell_a_click_to_the_callbacks() -> None:
    """Asked on the kernel's control channel (a blocking cell holds the shell one):
    the reply carries the hover text; a click goes to the ``on_select`` callbacks
    and nothing is sent from there (the callbacks' owner sets ``selected``)."""
    from sif_magic.display import panel

    grid = CallGrid(5, describe=lambda i: f"call {i} on host-{i}", via_control=True)
    ask = {"widget": grid.model_id}
    assert panel.answer({**ask, "op": "describe", "index": 2})["text"] == "call 2 on host-2"
    assert "does not answer 'select'" in panel.answer({**ask, "op": "select", "index": 3})["error"]
    seen: list[int] = []
    grid.on_select(seen.append)
    plain = CallGrid(5)  # the default: clicks are widget messages (they set `selected`)
    plain.on_select(seen.append)
    refused = panel.answer({"widget": plain.model_id, "op": "select", "index": 1})
    assert "does not answer 'select'" in refused["error"] and seen == []
    sent = len(_comm(grid).sent)
    assert panel.answer({**ask, "op": "select", "index": 3}) == {"index": 3, "selected": True}
    assert seen == [3] and grid.selected == -1 and len(_comm(grid).sent) == sent
    assert "no call 9" in panel.answer({**ask, "op": "select", "index": 9})["error"]
    assert "no widget 'gone'" in panel.answer({"widget": "gone", "op": "select"})["error"]


def test_a_mode_told_on_the_control_channel_goes_to_the_callbacks() -> None:
    from sif_magic.display import panel

    view = LogView(via_control=True)
    ask = {"widget": view.model_id, "op": "mode"}
    assert "not told on the control" in panel.answer({**ask, "mode": "all"})["error"]
    modes: list[str] = []
    view.on_mode_change(modes.append)
    assert panel.answer({**ask, "mode": "failures"}) == {"mode": "failures"}
    assert modes == ["failures"] and view.mode == "call"
    assert "one of call, all, failures" in panel.answer({**ask, "mode": "everything"})["error"]


def test_hello_records_the_frontend_version() -> None:
    grid = CallGrid(1)
    assert grid.frontend_version is None
    _comm(grid).from_frontend(
        {"method": "custom", "content": {"type": "hello", "version": "0.1.0"}}
    )  # noqa: E501
    assert grid.frontend_version == "0.1.0"


def test_unknown_custom_messages_are_ignored() -> None:
    grid = CallGrid(1)
    c = _comm(grid)
    c.from_frontend({"method": "custom", "content": {"type": "nonsense"}})
    c.from_frontend({"method": "custom", "content": {"type": "describe", "index": "x"}})
    c.from_frontend({"method": "custom", "content": "not a dict"})
    assert c.customs() == []


def test_text_fallback_is_short() -> None:
    grid = CallGrid(100_000)
    bundle = grid._repr_mimebundle_()
    assert bundle["text/plain"] == "CallGrid(n=100000, queued=100000)"
    assert "application/vnd.jupyter.widget-view+json" in bundle


# -- LogView --------------------------------------------------------------------


def test_logview_show_sends_everything_in_one_message() -> None:
    view = LogView()
    c = _comm(view)
    view.show("call 3 · failed", [(1, "hello\n"), (2, "oops\n")], "Traceback ...", dropped=120)
    ((data, _),) = c.updates()
    assert data["state"] == {
        "title": "call 3 · failed",
        "entries": [[1, "hello\n"], [2, "oops\n"]],
        "traceback": "Traceback ...",
        "dropped": 120,
    }
    view.clear()
    assert view.entries == [] and view.traceback == "" and view.dropped == 0


def test_logview_resend() -> None:
    view = LogView()
    view.show("t", [(1, "a")], "tb", 3)
    view.resend()
    (_, (data, _)) = _comm(view).updates()
    assert data["state"] == {"title": "t", "entries": [[1, "a"]], "traceback": "tb", "dropped": 3}


def test_mode_change_from_the_frontend_calls_back() -> None:
    view = LogView()
    modes: list[str] = []
    view.on_mode_change(modes.append)
    c = _comm(view)
    c.from_frontend({"method": "update", "state": {"mode": "failures"}, "buffer_paths": []})
    assert view.mode == "failures" and modes == ["failures"]
    view.on_mode_change(modes.append, remove=True)
    view.mode = "all"
    assert modes == ["failures"]


def test_mode_is_one_of_three() -> None:
    view = LogView()
    with pytest.raises(Exception, match="mode"):
        view.mode = "everything"


def test_logview_text_fallback() -> None:
    view = LogView()
    view.show("call 1", [(1, "x")])
    assert (
        view._repr_mimebundle_()["text/plain"] == "LogView(title='call 1', entries=1, mode='call')"
    )
