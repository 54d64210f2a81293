"""The trading desk: requests carry the kernel's word on who sent them; strangers are
refused before anything is read; and the client only talks to the appliance's own desk,
in a directory only the appliance's user (and its operator group) may enter."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.runtime import desk as desk_mod
from appliance.runtime.desk import (
    SOCKET,
    DeskError,
    DeskTaken,
    NotListening,
    TradingDesk,
    desk_dir,
    prepare,
    refusal,
    request,
)
from tests.runtime.fake_desk import FakeDesk
from tests.shm.users import NOBODY, STRANGER, AsUser, require_root


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[TradingDesk]:
    d = TradingDesk(desk_dir(tmp_path / "journal.sqlite"))
    yield d
    d.close()


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory of root's that other users may enter (pytest's tmp_path is under a 0700
    directory), for the tests that act as them."""
    base = Path(tempfile.mkdtemp(prefix="dynamind-desk-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def serve(desk: TradingDesk, answer, stop: threading.Event) -> None:
    """Answer every request with ``answer(req)`` until ``stop`` is set."""
    while not stop.is_set():
        for req in desk.requests():
            req.answer(answer(req))
        time.sleep(0.01)


class Serving:
    """``desk`` answering in a thread for the length of a with block."""

    def __init__(self, desk: TradingDesk, answer=lambda r: {"ok": True}) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(desk, answer, self.stop))

    def __enter__(self) -> Serving:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _connect_raw(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
    try:
        s.connect(f"/proc/self/fd/{fd}/{SOCKET}")
    finally:
        os.close(fd)
    return s


def test_request_and_answer_name_the_caller(desk):
    seen = []
    with Serving(desk, lambda r: seen.append(r) or {"ok": True}):
        assert request(desk.path, "halted", "why not", 5.0) == {"ok": True}
    [req] = seen
    assert (req.state, req.reason, req.uid, req.pid) == (
        "halted",
        "why not",
        os.getuid(),
        os.getpid(),
    )


def test_the_desk_is_a_private_directory_beside_the_journal(tmp_path):
    # a path far longer than a socket address may be (108 bytes): bound through /proc
    journal = tmp_path / ("x" * 120) / "journal.sqlite"
    d = TradingDesk(desk_dir(journal))
    try:
        assert d.listening and d.path == tmp_path / ("x" * 120) / "journal.desk"
        st, sock = os.stat(d.path, follow_symlinks=False), os.stat(d.path / SOCKET)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
        assert st.st_uid == sock.st_uid == os.geteuid()
        with Serving(d):
            assert request(d.path, "halted", "", 5.0) == {"ok": True}
    finally:
        d.close()
    assert not (d.path / SOCKET).exists()  # ours removed at the end, the directory kept


def test_with_an_operator_group_the_group_may_enter(tmp_path):
    require_root()
    d = TradingDesk(desk_dir(tmp_path / "journal.sqlite"), "nogroup")
    try:
        st, sock = os.stat(d.path), os.stat(d.path / SOCKET)
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o750)
        assert (sock.st_gid, stat.S_IMODE(sock.st_mode)) == (NOBODY, 0o660)
    finally:
        d.close()
    # the next start without the group closes it to the group again
    d = TradingDesk(d.path)
    try:
        assert stat.S_IMODE(os.stat(d.path).st_mode) == 0o700
    finally:
        d.close()


def test_strangers_cannot_reach_the_desk(open_base):
    require_root()
    d = TradingDesk(desk_dir(open_base / "journal.sqlite"))
    try:
        with Serving(d):
            got = AsUser(lambda: request(d.path, "active", "", 5.0), NOBODY, NOBODY).result()
    finally:
        d.close()
    assert got[0] == "error" and got[1].startswith("NotPermitted: uid 65534 (nobody) may not"), got


def test_the_group_reaches_the_desk_which_still_asks_the_kernel_who_called(open_base):
    require_root()
    d = TradingDesk(desk_dir(open_base / "journal.sqlite"), "nogroup")
    try:
        with Serving(d, lambda r: {"ok": True, "user": r.user}):
            member = AsUser(lambda: request(d.path, "active", "", 5.0), NOBODY, NOBODY).result()
            # in the group by its gid only: the file system lets it in, the desk does not
            other = AsUser(lambda: request(d.path, "active", "", 5.0), STRANGER, NOBODY).result()
    finally:
        d.close()
    assert member == ("ok", {"ok": True, "user": "nobody"})
    assert other == (
        "ok",
        {"ok": False, "error": f"uid {STRANGER} may not change the trading state"},
    )


def test_a_garbled_request_gets_an_error(desk):
    with Serving(desk), _connect_raw(desk.path) as s:
        s.sendall(b"not json\n")
        reply = s.recv(4096)
    assert b'"ok": false' in reply and b"bad request" in reply


def test_nobody_listening(tmp_path):
    with pytest.raises(NotListening, match="no execution process"):
        request(desk_dir(tmp_path / "journal.sqlite"), "halted", "", 1.0)
    d = TradingDesk(desk_dir(tmp_path / "journal.sqlite"))
    d.close()
    with pytest.raises(NotListening, match="no execution process"):
        request(d.path, "halted", "", 1.0)


def test_a_dead_executions_socket_is_removed_and_bound_again_at_once(tmp_path):
    path = desk_dir(tmp_path / "journal.sqlite")
    # an execution process killed while listening: its socket file stays
    code = f"import os, appliance.runtime.desk as d; d.TradingDesk({str(path)!r}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert stat.S_ISSOCK(os.stat(path / SOCKET).st_mode)
    with pytest.raises(NotListening):
        request(path, "halted", "", 1.0)
    d = TradingDesk(path)
    try:
        assert d.listening
        with Serving(d):
            assert request(path, "halted", "", 5.0) == {"ok": True}
    finally:
        d.close()


def test_a_symlink_or_a_file_in_the_desks_place_is_refused(tmp_path):
    path = desk_dir(tmp_path / "journal.sqlite")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    path.symlink_to(tmp_path / "elsewhere")
    for attempt in (lambda: prepare(path, None), lambda: request(path, "halted", "", 1.0)):
        with pytest.raises(DeskTaken, match=f"trading desk {path} exists and is a symbolic link"):
            attempt()
    assert isinstance(refusal(path), DeskTaken)
    path.unlink()
    path.write_text("")
    with pytest.raises(DeskTaken, match="is not a directory"):
        prepare(path, None)
    assert path.read_text() == ""  # left alone


def test_a_desk_open_to_others_is_refused_by_both_sides(desk):
    os.chmod(desk.path, 0o755)
    with Serving(desk), pytest.raises(DeskTaken, match=r"may be entered by others \(mode 755\)"):
        request(desk.path, "halted", "", 1.0)
    os.chmod(desk.path, 0o770)
    with pytest.raises(DeskTaken, match=r"may be written by its group or by others \(mode 770\)"):
        prepare(desk.path, None)


def test_another_users_desk_is_refused_at_start_and_by_the_client(open_base):
    """A squatter who could write where the journal lives (a shared, sticky directory
    like /tmp) makes the desk directory first and answers `{"ok": true}` in it: the
    appliance refuses it, naming path and owner, and the client sends it nothing."""
    require_root()
    shared = open_base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    path = desk_dir(shared / "journal.sqlite")
    fake = FakeDesk(NOBODY, NOBODY, path)
    try:
        owned = rf"trading desk {path} exists and belongs to uid 65534 \(nobody\), not to uid 0"
        with pytest.raises(DeskTaken, match=owned):
            prepare(path, None)
        assert isinstance(refusal(path), DeskTaken) and str(path) in str(refusal(path))
        with pytest.raises(DeskError, match="could be anyone's"):
            request(path, "halted", "", 5.0)
        # root's own desk in the shared directory: trusted, as root owns the directory
        assert refusal(desk_dir(shared / "other.sqlite")) is None
    finally:
        heard = fake.stop()
    assert heard == []
    assert os.stat(path).st_uid == NOBODY  # not ours to remove


def test_a_desk_another_user_was_given_is_not_trusted(open_base):
    """Even where only root could have put it (a desk chowned to another user in a
    directory of root's), a desk that is not the directory owner's is not the appliance's."""
    require_root()
    path = desk_dir(open_base / "journal.sqlite")
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    fake = FakeDesk(NOBODY, NOBODY, path, make_dir=False)
    try:
        with pytest.raises(DeskError, match=r"belongs to uid 0 \(root\), not to uid 65534"):
            request(path, "halted", "", 5.0)
    finally:
        heard = fake.stop()
    assert heard == []


def test_the_client_refuses_a_server_that_is_not_the_directorys_owner(tmp_path):
    """The desk's directory is right (root's, 0700) but the process listening in it is
    another user's: the client names the uid that answered and sends nothing."""
    require_root()
    path = desk_dir(tmp_path / "journal.sqlite")
    fd = prepare(path, None)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bound.bind(f"/proc/self/fd/{fd}/{SOCKET}")
        fake = FakeDesk(STRANGER, STRANGER, bound=bound)  # listen() as the stranger
    finally:
        bound.close()
        os.close(fd)
    try:
        with pytest.raises(
            DeskTaken, match=rf"answered by uid {STRANGER} \(pid \d+\), not by uid 0"
        ):
            request(path, "halted", "", 5.0)
    finally:
        heard = fake.stop()
    assert heard == []


def test_execution_goes_on_while_its_desk_is_refused_and_opens_it_later(tmp_path, monkeypatch):
    """In execution a refused desk is an error line, never the process's end: it trades on
    and opens the desk once the cause is gone."""
    monkeypatch.setattr(desk_mod, "RETRY_S", 0.0)
    path = desk_dir(tmp_path / "journal.sqlite")
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    d = TradingDesk(path)
    try:
        assert not d.listening and d.requests() == []
        os.chmod(path, 0o700)
        assert d.requests() == [] and d.listening
        with Serving(d):
            assert request(path, "halted", "", 5.0) == {"ok": True}
    finally:
        d.close()
