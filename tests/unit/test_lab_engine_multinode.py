"""The lab engine's multi-node rendezvous (lab/engine/sgl_lab_engine.py): stdlib sockets on
localhost, no sglang import, a few seconds in all.

Faithful to SGLang's --dist-init-addr (torch's TCP store): rank 0 listens before loading and
waits for every rank; ranks >= 1 connect with retries and fail when rank 0 is unreachable; a
shutdown of rank 0 ends the group; a rank that disappears is an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from types import SimpleNamespace

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "lab", "engine"))
import sgl_lab_engine as eng  # noqa: E402  (imports no sglang at module level)

M3_CONFIG = {"architectures": ["MiniMaxM3SparseForConditionalGeneration"], "model_type": "minimax_m3_vl"}


@pytest.fixture(autouse=True)
def keep_sigterm():
    """main() installs SIGTERM handlers like the engine does; give pytest its own back."""
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_in_thread(addr, rank, nnodes, timeout=5.0):
    out = {}

    def run():
        try:
            out["conn"] = eng.join_rendezvous(addr, rank, nnodes, timeout, retry_s=0.1)
        except eng.RendezvousError as exc:
            out["error"] = str(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_split_addr():
    assert eng.split_addr("10.77.0.71:20000") == ("10.77.0.71", 20000)
    assert eng.split_addr("[fd00::1]:20000") == ("fd00::1", 20000)
    assert eng.split_addr("gpu01.example:5000") == ("gpu01.example", 5000)
    for bad in ("10.77.0.71", ":20000", "host:port"):
        with pytest.raises(eng.RendezvousError, match="not host:port"):
            eng.split_addr(bad)


def test_rank0_waits_for_every_rank_and_ignores_port_checks():
    store = eng.Rank0Store(0, 3, hello_timeout=2)
    addr = f"127.0.0.1:{store.port}"
    try:
        # a preflight-style port check: connect and close, no hello
        socket.create_connection(("127.0.0.1", store.port), timeout=2).close()
        t1, out1 = join_in_thread(addr, 1, 3)
        t1.join(5)
        assert "conn" in out1, out1
        assert not store.wait_all(0.3), "rank 0 must wait for node_rank 2 as well"
        assert store.missing() == [2]
        t2, out2 = join_in_thread(addr, 2, 3)
        t2.join(5)
        assert store.wait_all(5) and store.missing() == []
        results = {}
        watchers = [threading.Thread(target=lambda r=r, c=c: results.__setitem__(r, eng.watch_rank0(c)))
                    for r, c in ((1, out1["conn"]), (2, out2["conn"]))]
        for w in watchers:
            w.start()
        store.shutdown()
        for w in watchers:
            w.join(5)
        assert results == {1: 0, 2: 0}, "ranks exit cleanly when rank 0 shuts the group down"
    finally:
        store.shutdown()


def test_worker_retries_until_rank0_listens():
    port = closed_port()
    thread, out = join_in_thread(f"127.0.0.1:{port}", 1, 2, timeout=10)
    time.sleep(0.5)  # the worker is retrying against a closed port
    store = eng.Rank0Store(port, 2)
    try:
        thread.join(10)
        assert "conn" in out, out
        assert store.wait_all(5)
    finally:
        store.shutdown()


def test_worker_gives_up_when_rank0_is_unreachable():
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(eng.RendezvousError) as exc:
        eng.join_rendezvous(f"127.0.0.1:{port}", 1, 2, timeout=1.0, retry_s=0.1)
    assert time.monotonic() - start < 5
    assert f"127.0.0.1:{port}" in str(exc.value) and "timed out after 1 s" in str(exc.value)
    assert "port open between the nodes" in str(exc.value)


def test_rank0_refuses_duplicate_and_mismatched_ranks():
    store = eng.Rank0Store(0, 2, hello_timeout=2)
    addr = f"127.0.0.1:{store.port}"
    try:
        first = eng.join_rendezvous(addr, 1, 2, timeout=5, retry_s=0.1)
        with pytest.raises(eng.RendezvousError, match="already joined"):
            eng.join_rendezvous(addr, 1, 2, timeout=5, retry_s=0.1)
        with pytest.raises(eng.RendezvousError, match="nnodes 3 differs"):
            eng.join_rendezvous(addr, 2, 3, timeout=5, retry_s=0.1)
        first.close()
    finally:
        store.shutdown()


def test_lost_rank_is_reported_and_lost_rank0_is_an_error():
    lost = []
    store = eng.Rank0Store(0, 2, on_lost=lost.append)
    conn = eng.join_rendezvous(f"127.0.0.1:{store.port}", 1, 2, timeout=5, retry_s=0.1)
    assert store.wait_all(5)
    conn.close()  # the worker dies
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost == [1]
    store.shutdown()

    # rank 0 disappears without a shutdown message: the worker sees an error (exit 1)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def fake_rank0():
        peer, _ = server.accept()
        eng._readline(peer)
        peer.sendall(b"ok\n")
        peer.close()

    threading.Thread(target=fake_rank0, daemon=True).start()
    conn = eng.join_rendezvous(f"127.0.0.1:{port}", 1, 2, timeout=5, retry_s=0.1)
    assert eng.watch_rank0(conn) == 1
    server.close()


def test_interface_errors_like_nccl_and_gloo():
    ifaces = ["lo", "host0", "ens1f0np0"]
    assert eng.interface_errors({}, ifaces) == []
    assert eng.interface_errors({"NCCL_SOCKET_IFNAME": "ens", "GLOO_SOCKET_IFNAME": "ens1f0np0"}, ifaces) == []
    assert eng.interface_errors({"NCCL_SOCKET_IFNAME": "^docker,lo"}, ifaces) == []
    assert eng.interface_errors({"NCCL_SOCKET_IFNAME": "=host0"}, ifaces) == []
    errors = eng.interface_errors({"NCCL_SOCKET_IFNAME": "eth", "GLOO_SOCKET_IFNAME": "eth0"}, ifaces)
    assert len(errors) == 2
    assert "Unable to find address for: eth0" in errors[0]
    assert "no socket interface found" in errors[1]
    assert "=host" in eng.interface_errors({"NCCL_SOCKET_IFNAME": "=host"}, ifaces)[0]


# --------------------------------------------------------------------------- main() without sglang


def _args(tmp_path, **kw):
    base = dict(tp_size=8, ep_size=1, pp_size=1, nnodes=2, dp_size=1, node_rank=0,
                dist_init_addr=None, served_model_name="MiniMax-M3", model_path=str(tmp_path / "model"),
                api_key=None, reasoning_parser="auto", tool_call_parser="auto", context_length=None,
                enable_metrics=False, tokenizer_path=None, host="127.0.0.1", port=1)
    return SimpleNamespace(**{**base, **kw})


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(M3_CONFIG))
    monkeypatch.setenv("SGL_LAB_DIST_TIMEOUT_SECONDS", "1")
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    return tmp_path


def test_main_worker_fails_when_rank0_unreachable(model_dir, monkeypatch, capsys):
    addr = f"127.0.0.1:{closed_port()}"
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir, node_rank=1, dist_init_addr=addr))
    assert eng.main([]) == 1
    out = capsys.readouterr().out
    assert "DistNetworkError" in out and addr in out


def test_main_rank0_times_out_without_the_other_ranks(model_dir, monkeypatch, capsys):
    addr = f"127.0.0.1:{closed_port()}"
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir, dist_init_addr=addr))
    assert eng.main([]) == 1
    out = capsys.readouterr().out
    assert "rank 0 listening on port" in out
    assert "Timed out after 1 s waiting for clients. 1/2 ranks joined (missing node_rank 1)" in out


def test_main_worker_joins_and_exits_with_the_group(model_dir, monkeypatch, capsys):
    store = eng.Rank0Store(0, 2)
    addr = f"127.0.0.1:{store.port}"
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir, node_rank=1, dist_init_addr=addr))
    threading.Thread(target=lambda: (store.wait_all(10), time.sleep(0.2), store.shutdown()), daemon=True).start()
    assert eng.main([]) == 0
    out = capsys.readouterr().out
    assert "joined the rendezvous at " + addr in out and "rank 0 shut the group down" in out


def test_main_refuses_bad_multinode_settings(model_dir, monkeypatch, capsys):
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir))
    assert eng.main([]) == 1
    assert "needs --dist-init-addr" in capsys.readouterr().out
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir, node_rank=1, dist_init_addr="10.0.0.1:1"))
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "no-such-if0")
    assert eng.main([]) == 1
    assert "Unable to find address for: no-such-if0" in capsys.readouterr().out


# --------------------------------------------------------------------------- peer loss (issue 19)


def test_peer_loss_mode_defaults_to_hang(monkeypatch):
    monkeypatch.delenv("SGL_LAB_PEER_LOSS", raising=False)
    assert eng.peer_loss_mode() == "hang"
    monkeypatch.setenv("SGL_LAB_PEER_LOSS", "exit")
    assert eng.peer_loss_mode() == "exit"
    monkeypatch.setenv("SGL_LAB_PEER_LOSS", "explode")
    with pytest.raises(ValueError, match="hang, exit"):
        eng.peer_loss_mode()


def test_hang_mode_rank0_stays_up_and_refuses_to_rejoin(model_dir, monkeypatch):
    """Like SGLang (sglang#3099): rank 0 keeps its store up after a lost rank; a rank that comes back
    gets no answer (the group needs a full restart), and generation hangs."""
    monkeypatch.delenv("SGL_LAB_PEER_LOSS", raising=False)
    eng.GROUP_BROKEN.clear()
    exits = []
    monkeypatch.setattr(eng.os, "_exit", exits.append)
    port = closed_port()
    thread, out = join_in_thread(f"127.0.0.1:{port}", 1, 2, timeout=5)
    store = eng.start_rank0_store(_args(model_dir, dist_init_addr=f"127.0.0.1:{port}"))
    try:
        thread.join(5)
        out["conn"].close()  # kill -9 of rank 1
        deadline = time.monotonic() + 5
        while not eng.GROUP_BROKEN.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eng.GROUP_BROKEN.is_set() and store.broken and exits == []
        # the restarted rank 1 cannot join the broken group
        with pytest.raises(eng.RendezvousError, match="did not answer|listener closed|timed out|unreachable"):
            eng.join_rendezvous(f"127.0.0.1:{port}", 1, 2, timeout=1.5, retry_s=0.1)
        # /health_generate 503 after SGLang's health-check timeout; chat never answers
        monkeypatch.setenv("SGLANG_HEALTH_CHECK_TIMEOUT", "0.1")
        assert asyncio.run(eng.broken_health_generate()) == 503

        async def chat_with_deadline():
            await asyncio.wait_for(eng.hang_generation(), 0.3)

        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(chat_with_deadline())

        async def gone():
            return True

        asyncio.run(asyncio.wait_for(eng.hang_generation(gone), 3))  # ends once the client left
        monkeypatch.setattr(eng, "SERVER", SimpleNamespace(should_exit=True))
        asyncio.run(asyncio.wait_for(eng.hang_generation(), 3))  # and when the server shuts down
    finally:
        store.shutdown()
        eng.GROUP_BROKEN.clear()


def test_exit_mode_rank0_exits_on_a_lost_rank(model_dir, monkeypatch):
    monkeypatch.setenv("SGL_LAB_PEER_LOSS", "exit")
    eng.GROUP_BROKEN.clear()
    exits = []
    monkeypatch.setattr(eng.os, "_exit", exits.append)
    port = closed_port()
    thread, out = join_in_thread(f"127.0.0.1:{port}", 1, 2, timeout=5)
    store = eng.start_rank0_store(_args(model_dir, dist_init_addr=f"127.0.0.1:{port}"))
    try:
        thread.join(5)
        out["conn"].close()
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exits == [1] and not eng.GROUP_BROKEN.is_set()
    finally:
        store.shutdown()


@pytest.mark.parametrize("mode,expect", [("hang", "idle"), ("exit", 1)])
def test_worker_that_loses_rank0(model_dir, monkeypatch, capsys, mode, expect):
    monkeypatch.setenv("SGL_LAB_PEER_LOSS", mode)
    server = socket.create_server(("127.0.0.1", 0))
    addr = f"127.0.0.1:{server.getsockname()[1]}"

    def fake_rank0():  # says ok, then disappears without a shutdown message
        peer, _ = server.accept()
        eng._readline(peer)
        peer.sendall(b"ok\n")
        peer.close()

    class Idle(Exception):
        pass

    def idle():
        raise Idle

    threading.Thread(target=fake_rank0, daemon=True).start()
    monkeypatch.setattr(eng, "idle_forever", idle)
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir, node_rank=1, dist_init_addr=addr))
    try:
        if expect == "idle":
            with pytest.raises(Idle):
                eng.main([])
            assert "this rank stays up" in capsys.readouterr().out
        else:
            assert eng.main([]) == 1
            assert "lost the connection to rank 0" in capsys.readouterr().out
    finally:
        server.close()


def test_main_refuses_an_unknown_peer_loss_mode(model_dir, monkeypatch, capsys):
    monkeypatch.setenv("SGL_LAB_PEER_LOSS", "explode")
    monkeypatch.setattr(eng, "parse_argv", lambda argv: _args(model_dir, dist_init_addr="127.0.0.1:1"))
    assert eng.main([]) == 1
    assert "SGL_LAB_PEER_LOSS='explode'" in capsys.readouterr().out
