#!/usr/bin/env python3
"""sgl-lab-engine (NOT SGLang): a test-only stand-in for an SGLang server on GPU-less lab hosts.

It is started by the same systemd unit with the same argv as ``python -m sglang.launch_server``
would be, from the host's real SGLang venv, and it:

* validates argv with SGLang's own ``prepare_server_args`` (``--config`` YAML included): bad
  argv exits 2 with argparse's message, as SGLang does; it also refuses what SGLang refuses
  later at launch (ep not dividing tp, ...);
* simulates weight loading (port closed, SGLang-like log lines), then binds, answers ``/health``
  503 during warmup and 200 after;
* serves SGLang's HTTP surface for probes (``/health``, ``/health_generate``, ``/ready``,
  ``/v1/models``, ``/model_info``, ``/metrics``, ``/v1/chat/completions``) with SGLang's auth
  middleware rules, and never ``/server_info``;
* answers with *scripted model text* in the model family's real MiniMax wire format (see
  ``lab_script.py``), passed through SGLang's real reasoning and tool-call parsers the way
  ``serving_chat.py`` uses them, so the wire format is SGLang's;
* with ``--nnodes N > 1`` behaves like SGLang's rendezvous on ``--dist-init-addr`` (torch's TCP
  store): rank 0 listens on that port before loading and loads (and opens HTTP) only once every
  rank >= 1 connected; ranks >= 1 connect (retrying), serve no HTTP, exit 0 when rank 0 shuts
  the group down and 1 when they cannot reach rank 0 in time or lose it (an NCCL failure); rank 0
  exits 1 when a rank leaves. ``NCCL_SOCKET_IFNAME`` / ``GLOO_SOCKET_IFNAME`` naming no interface
  of the host fail the start, as NCCL and Gloo do.

Environment knobs (all optional):
  SGL_LAB_DIST_TIMEOUT_SECONDS  multi-node: how long rank 0 waits for the other ranks and ranks
                          >= 1 try to reach rank 0 (default 300)
  SGL_LAB_LOAD_SECONDS    simulated weight-load time (default 3)
  SGL_LAB_WARMUP_SECONDS  /health 503 window after binding (default 1)
  SGL_LAB_EXIT_AT_START   exit with this code right after argv parsing
  SGL_LAB_TOKEN_DELAY_MS  delay between streamed chunks (default 5)
  SGL_LAB_PEER_LOSS       multi-node: what a rank does when a peer is lost. ``hang`` (default):
                          like real SGLang (sglang#3099, #4780) rank 0 stays up, its port open,
                          /health 200, /health_generate 503 after SGLANG_HEALTH_CHECK_TIMEOUT,
                          and every generation hangs; a rank >= 1 that loses rank 0 stays up too.
                          ``exit``: the kinder old behaviour, the rank exits 1.
  SGL_LAB_FAULT           comma list: slow-start (load x10), hang-load (never finishes loading),
                          crash-after-load (exit 1 like a CUDA OOM), never-ready (/health stays
                          503), stream-stall (streams send headers, then nothing)
"""

import asyncio
import ctypes
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
import uuid

ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))
if ENGINE_DIR not in sys.path:
    sys.path.insert(0, ENGINE_DIR)

import lab_script  # noqa: E402  (sibling module, stdlib only)
from lab_script import ENGINE_NAME  # noqa: E402

# Exempt from the API key, as in sglang/srt/utils/auth.py.
AUTH_EXEMPT_PREFIXES = ("/health", "/ready", "/metrics")
# SGLang's default buckets (sglang/srt/observability/metrics_collector.py, TokenizerMetricsCollector).
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400, 600, 1200, 1800, 2400)


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}] [{ENGINE_NAME}] {message}", flush=True)


def set_process_title() -> None:
    """``comm`` (ps -o comm, journal's process name) = sgl-lab-engine."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, b"sgl-lab-engine", 0, 0, 0)  # PR_SET_NAME
    except Exception:  # pragma: no cover - best effort
        pass


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def faults() -> set[str]:
    return {f.strip() for f in os.environ.get("SGL_LAB_FAULT", "").split(",") if f.strip()}


# --------------------------------------------------------------------------- argv


def parse_argv(argv: list[str]):
    """Parse with SGLang's real parser; argparse errors exit 2 by themselves."""
    import warnings

    # sglang's environ.py calls every SGL_* variable a deprecated alias of SGLANG_*; ours
    # (SGL_LAB_*) are not sglang's, so keep that warning out of the journal.
    warnings.filterwarnings("ignore", message=r"Environment variable SGL_LAB_")
    from sglang.srt.server_args import prepare_server_args

    return prepare_server_args(argv)


def launch_errors(args) -> list[str]:
    """What SGLang refuses after parsing (resolve/launch), checked here without a GPU."""
    errors = []
    tp, ep, pp = args.tp_size, getattr(args, "ep_size", 1) or 1, getattr(args, "pp_size", 1) or 1
    nnodes = getattr(args, "nnodes", 1) or 1
    dp = getattr(args, "dp_size", 1) or 1
    if ep > 1 and tp % ep != 0:
        errors.append(
            f"tp_size ({tp}) must be a multiple of ep_size ({ep}): SGLang requires "
            f"tp_size == moe_ep_size * moe_tp_size (runtime_context.py)"
        )
    if (tp * pp) % nnodes != 0:
        errors.append("tp_size must be divisible by number of nodes")
    if dp > 1 and nnodes != 1:
        errors.append("dp_size > 1 across nodes is not supported: use attention DP (--attn-dp-size)")
    name = args.served_model_name
    if name and ":" in str(name) and name != args.model_path:
        errors.append(
            f"--served-model-name {name!r} must not contain ':' (reserved for model:lora-adapter)"
        )
    return errors


# --------------------------------------------------------------------------- multi-node rendezvous

RDV_HELLO = "sgl-lab-rank"


PEER_LOSS_MODES = ("hang", "exit")
# Set on rank 0 when a peer was lost in the ``hang`` mode: generation hangs from then on.
GROUP_BROKEN = threading.Event()


def peer_loss_mode() -> str:
    """SGL_LAB_PEER_LOSS: ``hang`` (default, as real SGLang) or ``exit``."""
    mode = os.environ.get("SGL_LAB_PEER_LOSS", "").strip().lower() or "hang"
    if mode not in PEER_LOSS_MODES:
        raise ValueError(f"SGL_LAB_PEER_LOSS={mode!r}: use one of {', '.join(PEER_LOSS_MODES)}")
    return mode


def idle_forever() -> None:
    """A rank that hangs: stays up (its unit active) until SIGTERM/SIGKILL."""
    while True:
        time.sleep(3600)


class RendezvousError(RuntimeError):
    """A rank cannot join the group (torch would raise DistNetworkError / DistStoreError)."""


def split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` (SGLang's --dist-init-addr) -> (host, port)."""
    host, sep, port = str(addr).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RendezvousError(f"--dist-init-addr {addr!r} is not host:port")
    return host.strip("[]"), int(port)


def _readline(conn: socket.socket, limit: int = 256) -> str:
    """One line from ``conn`` ('' when the peer closed first)."""
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def interface_errors(environ, interfaces) -> list[str]:
    """NCCL/Gloo socket interface settings that match no interface, with their libraries' errors."""
    names = sorted(interfaces)
    errors = []
    gloo = (environ.get("GLOO_SOCKET_IFNAME") or "").strip()
    for name in [n.strip() for n in gloo.split(",") if n.strip()]:
        if name not in names:
            errors.append(f"GLOO_SOCKET_IFNAME={gloo}: RuntimeError: [enforce fail at "
                          f"gloo/transport/tcp/device.cc] Unable to find address for: {name} "
                          f"(interfaces: {', '.join(names)})")
    nccl = (environ.get("NCCL_SOCKET_IFNAME") or "").strip()
    if nccl:
        text, exclude = (nccl[1:], True) if nccl.startswith("^") else (nccl, False)
        text, exact = (text[1:], True) if text.startswith("=") else (text, False)
        wanted = [w.strip() for w in text.split(",") if w.strip()]

        def hit(name):
            return any(name == w if exact else name.startswith(w) for w in wanted)

        picked = [n for n in names if hit(n) != exclude]
        if not picked:
            errors.append(f"NCCL_SOCKET_IFNAME={nccl}: NCCL WARN Bootstrap : no socket interface found "
                          f"(interfaces: {', '.join(names)}); ncclInternalError")
    return errors


def host_interfaces() -> list[str]:
    try:
        return os.listdir("/sys/class/net")
    except OSError:
        return []


class Rank0Store:
    """Rank 0's side of ``--dist-init-addr``, like torch's TCP store server.

    Listens on the port (all addresses), takes ``sgl-lab-rank <rank> <nnodes>`` hellos from the
    other ranks, answers ``ok`` (or ``error ...``), and watches every joined rank: a connection
    that drops while the group is up calls ``on_lost(rank)``. Connections that send no hello
    (port checks) are closed and ignored. ``shutdown()`` tells the ranks to exit.
    """

    def __init__(self, port: int, nnodes: int, on_lost=None, hello_timeout: float = 10.0):
        if socket.has_dualstack_ipv6():
            self.server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            self.server = socket.create_server(("", port))
        self.port = self.server.getsockname()[1]
        self.nnodes = nnodes
        self.on_lost = on_lost or (lambda rank: None)
        self.hello_timeout = hello_timeout
        self.ranks: dict[int, socket.socket] = {}
        self.cond = threading.Condition()
        self.closing = False
        # hang mode after a lost rank: hellos get no answer (a torch store whose NCCL group hangs)
        self.broken = False
        threading.Thread(target=self._accept, daemon=True, name="rdv-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.server.accept()
            except OSError:
                return
            host = peer[0][7:] if peer[0].startswith("::ffff:") else peer[0]  # IPv4 on the dual-stack socket
            threading.Thread(target=self._serve, args=(conn, host), daemon=True).start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        try:
            conn.settimeout(self.hello_timeout)
            parts = _readline(conn).split()
        except OSError:
            parts = []
        if len(parts) != 3 or parts[0] != RDV_HELLO or not (parts[1].isdigit() and parts[2].isdigit()):
            conn.close()  # a port check (preflight, wait_for), not a rank
            return
        rank, nnodes = int(parts[1]), int(parts[2])
        if self.broken:
            log(f"rendezvous: node_rank={rank} from {peer} gets no answer: the group lost a rank and "
                "hangs (SGL_LAB_PEER_LOSS=hang; SGLang needs a restart of every rank)")
            try:
                while conn.recv(64):
                    pass
            except OSError:
                pass
            conn.close()
            return
        with self.cond:
            problem = (
                f"nnodes {nnodes} differs from rank 0's {self.nnodes}" if nnodes != self.nnodes
                else f"node_rank {rank} is outside 1..{self.nnodes - 1}" if not 1 <= rank < self.nnodes
                else f"node_rank {rank} already joined" if rank in self.ranks
                else "shutting down" if self.closing else ""
            )
            if not problem:
                self.ranks[rank] = conn
                self.cond.notify_all()
        if problem:
            log(f"rendezvous: refused {peer}: {problem}")
            try:
                conn.sendall(f"error {problem}\n".encode())
            except OSError:
                pass
            conn.close()
            return
        conn.settimeout(None)
        conn.sendall(b"ok\n")
        log(f"rendezvous: node_rank={rank} joined from {peer} ({len(self.ranks) + 1}/{self.nnodes} ranks)")
        try:
            while conn.recv(64):
                pass
        except OSError:
            pass
        with self.cond:
            lost = not self.closing and self.ranks.get(rank) is conn
            if lost:
                del self.ranks[rank]
        if lost:
            self.on_lost(rank)

    def missing(self) -> list[int]:
        with self.cond:
            return [r for r in range(1, self.nnodes) if r not in self.ranks]

    def wait_all(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.ranks) == self.nnodes - 1, timeout)

    def shutdown(self) -> None:
        with self.cond:
            self.closing = True
            conns = list(self.ranks.values())
        for conn in conns:
            try:
                conn.sendall(b"shutdown\n")
                conn.close()
            except OSError:
                pass
        try:
            self.server.close()
        except OSError:
            pass


def join_rendezvous(addr: str, rank: int, nnodes: int, timeout: float, retry_s: float = 1.0) -> socket.socket:
    """Rank >= 1: connect to rank 0 at ``addr`` (retrying until ``timeout``), say hello, get ``ok``."""
    host, port = split_addr(addr)
    deadline = time.monotonic() + timeout
    last = "no attempt"
    next_log = 0.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RendezvousError(
                f"timed out after {timeout:g} s trying to connect to rank 0 at {addr} ({last}); "
                "is rank 0 running, and is the port open between the nodes?"
            )
        try:
            conn = socket.create_connection((host, port), timeout=min(3.0, max(left, 0.1)))
            conn.settimeout(min(10.0, max(left, 0.1)))
            conn.sendall(f"{RDV_HELLO} {rank} {nnodes}\n".encode())
            reply = _readline(conn)
            if reply == "ok":
                conn.settimeout(None)
                return conn
            conn.close()
            if reply.startswith("error"):
                raise RendezvousError(f"rank 0 at {addr} refused node_rank {rank}: {reply[6:]}")
            last = "connected, but the listener closed without answering"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= next_log:
            log(f"node_rank={rank}: waiting for rank 0 at {addr} ({last})")
            next_log = time.monotonic() + 15
        time.sleep(retry_s)


def watch_rank0(conn: socket.socket) -> int:
    """Block until rank 0 shuts the group down (0) or the connection drops (1)."""
    buf = b""
    try:
        while True:
            chunk = conn.recv(64)
            if not chunk:
                return 1
            buf += chunk
            if b"shutdown" in buf:
                return 0
    except OSError:
        return 1


def run_worker_rank(args) -> int:
    """Rank >= 1: join rank 0's rendezvous, serve no HTTP, exit with the group."""
    addr, rank, nnodes = args.dist_init_addr, int(args.node_rank), int(args.nnodes)
    log(f"node_rank={rank}: only rank 0 serves HTTP (as in SGLang); joining rank 0's rendezvous at {addr}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        conn = join_rendezvous(addr, rank, nnodes, env_float("SGL_LAB_DIST_TIMEOUT_SECONDS", 300.0))
    except RendezvousError as exc:
        log(f"ERROR: torch.distributed.DistNetworkError: {exc}")
        return 1
    log(f"node_rank={rank}: joined the rendezvous at {addr} ({nnodes} nodes); idling (no HTTP on ranks >= 1)")
    if watch_rank0(conn) == 0:
        log(f"node_rank={rank}: rank 0 shut the group down; exiting")
        return 0
    if peer_loss_mode() == "hang":
        log(f"node_rank={rank}: lost the connection to rank 0 at {addr}; SGL_LAB_PEER_LOSS=hang: this rank "
            "stays up waiting in its collective, as SGLang's ranks do (sglang#3099)")
        idle_forever()
    log(f"ERROR: node_rank={rank}: lost the connection to rank 0 at {addr} "
        "(NCCL error: remote process exited or there was a network error); exiting")
    return 1


def start_rank0_store(args) -> "Rank0Store | None":
    """Rank 0 of a multi-node group: listen on the --dist-init-addr port, wait for every rank."""
    addr, nnodes = args.dist_init_addr, int(args.nnodes)
    _, port = split_addr(addr)

    mode = peer_loss_mode()

    def lost(rank: int) -> None:
        if mode == "hang":
            store.broken = True
            GROUP_BROKEN.set()
            log(f"node_rank={rank} left the group; SGL_LAB_PEER_LOSS=hang: rank 0 stays up like SGLang "
                "(sglang#3099, #4780): port open, /health 200, every generation hangs")
            return
        log(f"ERROR: node_rank={rank} left the group (NCCL error: remote process exited or there was a "
            "network error); rank 0 exits (SGL_LAB_PEER_LOSS=exit)")
        os._exit(1)

    try:
        store = Rank0Store(port, nnodes, on_lost=lost)
    except OSError as exc:
        log(f"ERROR: torch.distributed.DistNetworkError: The server socket has failed to listen on any "
            f"local network address. port: {port}: {exc}")
        return None

    def shut_down_group(*_):
        # also after serving: uvicorn restores this handler after its graceful shutdown and re-raises SIGTERM
        store.shutdown()
        log("SIGTERM: rank 0 shut the group down")
        sys.exit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, shut_down_group)
    timeout = env_float("SGL_LAB_DIST_TIMEOUT_SECONDS", 300.0)
    log(f"rendezvous: rank 0 listening on port {port} ({addr}); waiting up to {timeout:g} s for "
        f"{nnodes - 1} more rank(s)")
    if not store.wait_all(timeout):
        log(f"ERROR: torch.distributed.DistStoreError: Timed out after {timeout:g} s waiting for clients. "
            f"{nnodes - len(store.missing())}/{nnodes} ranks joined (missing node_rank "
            f"{', '.join(map(str, store.missing()))})")
        store.shutdown()
        return None
    log(f"rendezvous: all {nnodes} ranks joined")
    return store


# --------------------------------------------------------------------------- state


class Metrics:
    """SGLang's metric names, types, HELP texts and labels (sglang 0.5.23,
    sglang/srt/observability/metrics_collector.py) for what the lab engine does.

    Scheduler gauges carry ``model_name, engine_type, tp_rank, pp_rank, moe_ep_rank`` (one series per
    scheduler; SGLang exports them from the stats-logging rank, tp_rank 0); tokenizer counters and
    histograms carry ``model_name, engine_type`` (+ ``is_streaming`` where SGLang adds it). The text
    format is prometheus_client's (``_total`` samples for counters, ``le`` as a float string).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.aborted_total = 0
        # per is_streaming value; "false" exists from the start so every family has a series
        self.requests_total: dict[str, int] = {"false": 0}
        self.prompt_tokens_total: dict[str, int] = {"false": 0}
        self.generation_tokens_total: dict[str, int] = {"false": 0}
        self.ttft: dict[str, list[int]] = {"false": [0] * (len(TTFT_BUCKETS) + 1)}
        self.ttft_sum: dict[str, float] = {"false": 0.0}
        self.e2e: dict[str, list[int]] = {"false": [0] * (len(E2E_BUCKETS) + 1)}
        self.e2e_sum: dict[str, float] = {"false": 0.0}
        self.started = time.monotonic()

    @staticmethod
    def _observe(counts, buckets, value):
        for i, bound in enumerate(buckets):
            if value <= bound:
                counts[i] += 1
                return
        counts[-1] += 1

    def begin(self) -> None:
        with self.lock:
            self.running += 1

    def abort(self) -> None:
        with self.lock:
            self.aborted_total += 1

    def end(self, prompt: int, completion: int, ttft: float, e2e: float, streaming: bool = False) -> None:
        key = "true" if streaming else "false"
        with self.lock:
            self.running -= 1
            self.requests_total[key] = self.requests_total.get(key, 0) + 1
            self.prompt_tokens_total[key] = self.prompt_tokens_total.get(key, 0) + prompt
            self.generation_tokens_total[key] = self.generation_tokens_total.get(key, 0) + completion
            self._observe(self.ttft.setdefault(key, [0] * (len(TTFT_BUCKETS) + 1)), TTFT_BUCKETS, ttft)
            self.ttft_sum[key] = self.ttft_sum.get(key, 0.0) + ttft
            self._observe(self.e2e.setdefault(key, [0] * (len(E2E_BUCKETS) + 1)), E2E_BUCKETS, e2e)
            self.e2e_sum[key] = self.e2e_sum.get(key, 0.0) + e2e

    def render(self, model_name: str, max_total_tokens: int, tp_rank: int = 0, pp_rank: int = 0,
               moe_ep_rank: int = 0) -> str:
        name_label = 'model_name="%s"' % model_name.replace("\\", "\\\\").replace('"', '\\"')
        tok = f'engine_type="unified",{name_label}'
        sched = f'engine_type="unified",moe_ep_rank="{moe_ep_rank}",{name_label},pp_rank="{pp_rank}",tp_rank="{tp_rank}"'
        lines: list[str] = []

        def metric(name, kind, help_text, samples):
            lines.append(f"# HELP sglang:{name} {help_text}")
            lines.append(f"# TYPE sglang:{name} {kind}")
            lines.extend(samples)

        def gauge(name, help_text, value):
            metric(name, "gauge", help_text, [f"sglang:{name}{{{sched}}} {float(value)}"])

        def counter(name, help_text, per_stream):
            metric(name, "counter", help_text,
                   [f'sglang:{name}{{{tok},is_streaming="{k}"}} {float(v)}' for k, v in sorted(per_stream.items())])

        def hist(name, help_text, per_stream, sums, buckets):
            samples = []
            for key in sorted(per_stream):
                labels, acc = f'{tok},is_streaming="{key}"', 0
                for bound, count in zip([float(b) for b in buckets] + ["+Inf"], per_stream[key]):
                    acc += count
                    samples.append(f'sglang:{name}_bucket{{{labels},le="{bound}"}} {float(acc)}')
                samples.append(f"sglang:{name}_count{{{labels}}} {float(acc)}")
                samples.append(f"sglang:{name}_sum{{{labels}}} {sums[key]}")
            metric(name, "histogram", help_text, samples)

        with self.lock:
            uptime = max(time.monotonic() - self.started, 1e-6)
            used = min(self.running * 256, max_total_tokens)
            generated = sum(self.generation_tokens_total.values())
            gauge("num_running_reqs", "The number of running requests.", self.running)
            gauge("num_queue_reqs", "The number of requests in the waiting queue.", 0)
            gauge("gen_throughput", "The generation throughput (token/s).", round(generated / uptime, 3))
            gauge("token_usage", "The token usage.", round(used / max(max_total_tokens, 1), 6))
            gauge("num_used_tokens", "The number of used tokens.", used)
            gauge("cache_hit_rate", "The prefix cache hit rate.", 0)
            gauge("max_total_num_tokens", "Maximum total number of tokens in the KV cache pool.", max_total_tokens)
            counter("prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens_total)
            counter("generation_tokens_total", "Number of generation tokens processed.",
                    self.generation_tokens_total)
            counter("num_requests_total", "Number of requests processed.", self.requests_total)
            metric("num_aborted_requests_total", "counter", "Number of requests aborted.",
                   [f"sglang:num_aborted_requests_total{{{tok}}} {float(self.aborted_total)}"])
            hist("time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                 self.ttft, self.ttft_sum, TTFT_BUCKETS)
            hist("e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds",
                 self.e2e, self.e2e_sum, E2E_BUCKETS)
        lines.append("# sgl-lab-engine (NOT SGLang) simulated metrics")
        return "\n".join(lines) + "\n"


class Engine:
    """Everything a request handler needs, decided once at start."""

    def __init__(self, args, config: dict):
        self.args = args
        self.config = config
        self.family = lab_script.model_family(config)
        self.model_path = args.model_path
        self.served_model_name = args.served_model_name or args.model_path
        self.api_key = args.api_key
        auto = lab_script.AUTO_PARSERS[self.family]
        self.reasoning_parser = args.reasoning_parser
        if self.reasoning_parser == "auto":
            self.reasoning_parser = auto["reasoning_parser"]
        self.tool_call_parser = args.tool_call_parser
        if self.tool_call_parser == "auto":
            self.tool_call_parser = auto["tool_call_parser"]
        self.context_len = int(args.context_length or lab_script.context_length(config, self.family))
        self.multimodal = lab_script.has_image_understanding(config) and (
            getattr(args, "enable_multimodal", None) is not False
        ) and not getattr(args, "language_only", False)
        self.enable_metrics = bool(args.enable_metrics)
        self.max_total_tokens = 412345
        self.token_delay = env_float("SGL_LAB_TOKEN_DELAY_MS", 5.0) / 1000.0
        self.ready = False
        self.faults = faults()
        self.metrics = Metrics()

    # ---- info endpoints

    def model_card(self) -> dict:
        return {
            "id": self.served_model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": ENGINE_NAME,
            "root": self.served_model_name,
            "parent": None,
            "max_model_len": self.context_len,
        }

    def model_info(self) -> dict:
        return {
            "model_path": self.model_path,
            "served_model_name": self.served_model_name,
            "tokenizer_path": self.args.tokenizer_path or self.model_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": getattr(self.args, "weight_version", "default"),
            "load_format": getattr(self.args, "load_format", "auto"),
            "reasoning_parser": self.reasoning_parser,
            "tool_call_parser": self.tool_call_parser,
            "disaggregation_mode": getattr(self.args, "disaggregation_mode", "null"),
            "has_image_understanding": self.multimodal,
            "has_audio_understanding": False,
            "model_type": self.config.get("model_type"),
            "architectures": self.config.get("architectures"),
            "engine": ENGINE_NAME,
        }


# --------------------------------------------------------------------------- chat


def error_body(message: str, code: int = 400, err_type: str = "BadRequestError") -> dict:
    """SGLang's ErrorResponse shape."""
    return {"object": "error", "message": message, "type": err_type, "param": None, "code": code}


class ChatRun:
    """One chat completion: scripted text through SGLang's real parsers."""

    def __init__(self, engine: Engine, body: dict, request):
        from sglang.srt.entrypoints.openai.protocol import Tool

        self.engine = engine
        self.body = body
        self.request = request
        self.id = uuid.uuid4().hex
        self.created = int(time.time())
        self.model = request.model
        self.tools_raw = body.get("tools") or None
        self.tools = [Tool.model_validate(t) for t in self.tools_raw] if self.tools_raw else []
        kwargs = dict(request.chat_template_kwargs or {})
        thinking = body.get("thinking")
        effort = body.get("reasoning_effort")
        mode = kwargs.get("thinking_mode")
        if mode is None and isinstance(thinking, dict):
            mode = thinking.get("type")
        if mode is None and effort in ("none", "minimal"):
            mode = "disabled"
        self.thinking_mode = mode
        messages = body.get("messages") or []
        reply = lab_script.script_reply(
            engine.family, messages, self.tools_raw, body.get("tool_choice"), mode
        )
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        self.tokens, self.finish = lab_script.limit_tokens(
            lab_script.tokenize(reply.text), max_tokens, bool(body.get("ignore_eos"))
        )
        self.prompt_tokens = lab_script.prompt_tokens(messages, self.tools_raw)
        self.completion_tokens = len(self.tokens)

    # ---- parser construction, as serving_chat.py does it

    def tool_parsing_active(self) -> bool:
        from sglang.srt.function_call.function_call_parser import FunctionCallParser

        parser = self.engine.tool_call_parser
        if not parser:
            return False
        if not self.tools:
            detector = FunctionCallParser.ToolCallParserEnum.get(parser)
            return bool(detector and detector.parses_without_tools())
        return self.request.tool_choice != "none"

    def force_reasoning(self) -> bool:
        # M2 templates open <think> in the generation prompt; M3 prefills <mm:think> only for
        # thinking_mode=enabled (serving_chat._get_reasoning_from_request).
        if self.engine.family == lab_script.FAMILY_M2:
            return True
        return self.engine.reasoning_parser == "minimax-m3" and self.thinking_mode == "enabled"

    def reasoning_parser(self, stream: bool):
        from sglang.srt.parser.reasoning_parser import ReasoningParser

        if not (self.engine.reasoning_parser and self.request.separate_reasoning):
            return None
        return ReasoningParser(
            model_type=self.engine.reasoning_parser,
            stream_reasoning=self.request.stream_reasoning if stream else False,
            force_reasoning=self.force_reasoning(),
            request=self.request,
            tool_call_parser_active=self.tool_parsing_active(),
        )

    def function_parser(self):
        from sglang.srt.function_call.function_call_parser import FunctionCallParser

        return FunctionCallParser(self.tools, self.engine.tool_call_parser)

    @staticmethod
    def call_id() -> str:
        return f"call_{uuid.uuid4().hex[:24]}"

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens_details": None,
            "reasoning_tokens": 0,
        }

    # ---- non-streaming (serving_chat._build_chat_response / _process_tool_calls)

    def complete(self) -> dict:
        from sglang.srt.entrypoints.openai.protocol import (
            ChatCompletionResponse,
            ChatCompletionResponseChoice,
            ChatMessage,
            FunctionResponse,
            ToolCall,
            UsageInfo,
        )

        text = "".join(self.tokens)
        finish = self.finish
        reasoning_text = None
        parser = self.reasoning_parser(stream=False)
        if parser is not None:
            reasoning_text, text = parser.parse_non_stream(text)
        tool_calls = None
        if self.tool_parsing_active():
            fparser = self.function_parser()
            if fparser.has_tool_call(text):
                text, calls = fparser.parse_non_stream(text)
                if calls:
                    tool_calls = [
                        ToolCall(
                            id=self.call_id(),
                            index=i,
                            function=FunctionResponse(name=c.name, arguments=c.parameters),
                        )
                        for i, c in enumerate(calls)
                    ]
                    if finish == "stop":
                        finish = "tool_calls"
        response = ChatCompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[
                ChatCompletionResponseChoice(
                    index=0,
                    message=ChatMessage(
                        role="assistant",
                        content=text if text else "",
                        tool_calls=tool_calls,
                        reasoning_content=reasoning_text or None,
                    ),
                    finish_reason=finish,
                    matched_stop=None,
                )
            ],
            usage=UsageInfo(**self.usage()),
        )
        return json.loads(response.model_dump_json())

    # ---- streaming (serving_chat._generate_chat_stream / _generate_stream_content)

    async def stream(self):
        from sglang.srt.entrypoints.openai.protocol import (
            ChatCompletionResponseStreamChoice,
            ChatCompletionStreamResponse,
            DeltaMessage,
            FunctionResponse,
            ToolCall,
            UsageInfo,
        )
        from sglang.srt.entrypoints.openai.sse_utils import build_sse_content

        if "stream-stall" in self.engine.faults:
            while True:  # headers are out; never a chunk (tests the client's timeout)
                await asyncio.sleep(3600)

        def chunk(delta: DeltaMessage) -> str:
            resp = ChatCompletionStreamResponse(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[ChatCompletionResponseStreamChoice(index=0, delta=delta)],
            )
            return f"data: {resp.model_dump_json()}\n\n"

        rparser = self.reasoning_parser(stream=True)
        tool_active = self.tool_parsing_active()
        fparser = self.function_parser() if tool_active else None
        has_tool_calls = False

        yield build_sse_content(
            chunk_id=self.id, created=self.created, model=self.model, index=0,
            role="assistant", content="",
        )
        last = len(self.tokens) - 1
        for i, delta in enumerate(self.tokens):
            await asyncio.sleep(self.engine.token_delay)
            final = i == last
            if rparser is not None:
                reasoning_text, delta = rparser.parse_stream_chunk(delta)
                if final:
                    end_reasoning, end_normal = rparser.parse_stream_end()
                    if end_reasoning:
                        reasoning_text = (reasoning_text or "") + end_reasoning
                    if end_normal:
                        delta = (delta or "") + end_normal
                if reasoning_text:
                    yield build_sse_content(
                        chunk_id=self.id, created=self.created, model=self.model, index=0,
                        reasoning_content=reasoning_text,
                    )
            if fparser is not None:
                normal, calls = fparser.parse_stream_chunk(delta or "")
                if final:
                    end_text, end_calls = fparser.parse_stream_end()
                    normal = (normal or "") + end_text
                    calls = list(calls) + list(end_calls)
                if normal:
                    yield chunk(DeltaMessage(content=normal))
                for call in calls:
                    has_tool_calls = True
                    yield chunk(
                        DeltaMessage(
                            tool_calls=[
                                ToolCall(
                                    id=self.call_id() if call.name else None,
                                    index=call.tool_index,
                                    function=FunctionResponse(
                                        name=call.name or None, arguments=call.parameters
                                    ),
                                )
                            ]
                        )
                    )
                if final:
                    rest = self._unstreamed_args(fparser)
                    if rest is not None:
                        yield chunk(DeltaMessage(tool_calls=[rest]))
            elif delta:
                yield build_sse_content(
                    chunk_id=self.id, created=self.created, model=self.model, index=0,
                    content=delta,
                )
        finish = self.finish
        if has_tool_calls and finish == "stop":
            finish = "tool_calls"
        yield build_sse_content(
            chunk_id=self.id, created=self.created, model=self.model, index=0,
            finish_reason=finish,
        )
        options = self.body.get("stream_options") or {}
        if options.get("include_usage"):
            usage_chunk = ChatCompletionStreamResponse(
                id=self.id, created=self.created, model=self.model, choices=[],
                usage=UsageInfo(**self.usage()),
            )
            yield f"data: {usage_chunk.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"

    @staticmethod
    def _unstreamed_args(fparser):
        """serving_chat._check_for_unstreamed_tool_args."""
        from sglang.srt.entrypoints.openai.protocol import FunctionResponse, ToolCall

        detector = fparser.detector
        prev = getattr(detector, "prev_tool_call_arr", None)
        streamed = getattr(detector, "streamed_args_for_tool", None)
        if not prev or not streamed:
            return None
        index = len(prev) - 1
        if index < 0 or index >= len(streamed):
            return None
        expected = prev[index].get("arguments", {})
        expected = expected if isinstance(expected, str) else json.dumps(expected, ensure_ascii=False)
        actual = streamed[index]
        rest = expected[len(actual):] if expected.startswith(actual) else ""
        if not rest:
            return None
        return ToolCall(id=None, index=index, function=FunctionResponse(name=None, arguments=rest))


# --------------------------------------------------------------------------- HTTP app


def build_app(engine: Engine, warmup_seconds: float = 0.0):
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from pydantic import ValidationError

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        async def finish_warmup():
            await asyncio.sleep(warmup_seconds)
            if "never-ready" in engine.faults:
                log("fault never-ready: warmup never finishes, /health stays 503")
                return
            engine.ready = True
            log("The server is fired up and ready to roll!")

        task = asyncio.get_running_loop().create_task(finish_warmup())
        yield
        engine.ready = False  # shutting down: /health 503, like SGLang's gracefully_exit
        task.cancel()

    app = FastAPI(title=ENGINE_NAME, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)

    @app.middleware("http")
    async def auth_and_log(request: Request, call_next):
        start = time.monotonic()
        path = request.url.path
        client = request.client.host if request.client else "-"
        if (
            engine.api_key
            and request.method != "OPTIONS"
            and not path.startswith(AUTH_EXEMPT_PREFIXES)
        ):
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            ok = scheme.lower() == "bearer" and secrets.compare_digest(
                token.encode(), engine.api_key.encode()
            )
            if not ok:
                log(f'{client} "{request.method} {path}" 401 {time.monotonic() - start:.3f}s')
                return JSONResponse({"error": "Unauthorized"}, status_code=401)
        response = await call_next(request)
        log(f'{client} "{request.method} {path}" {response.status_code} {time.monotonic() - start:.3f}s')
        return response

    def health_status() -> Response:
        return Response(status_code=200 if engine.ready else 503)

    @app.get("/health")
    async def health():
        return health_status()

    @app.get("/health_generate")
    async def health_generate():
        if GROUP_BROKEN.is_set():
            return Response(status_code=await broken_health_generate())
        return health_status()

    @app.get("/ready")
    async def ready():
        return health_status()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [engine.model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != engine.served_model_name:
            return JSONResponse(
                {"error": {"message": f"The model '{name}' does not exist", "type": "invalid_request_error",
                           "param": "model", "code": "model_not_found"}},
                status_code=404,
            )
        return engine.model_card()

    @app.get("/model_info")
    async def model_info():
        return engine.model_info()

    @app.get("/get_model_info")
    async def get_model_info():
        log("Endpoint '/get_model_info' is deprecated; use '/model_info'")
        return engine.model_info()

    @app.api_route("/server_info", methods=["GET", "POST"])
    @app.api_route("/get_server_info", methods=["GET", "POST"])
    async def server_info():
        # Real SGLang echoes the API key here; the lab engine refuses to have it at all.
        return JSONResponse(
            {"error": f"{ENGINE_NAME} has no /server_info: it echoes the API key in SGLang; "
                      "probes must never call it"},
            status_code=404,
        )

    @app.get("/metrics")
    async def metrics():
        if not engine.enable_metrics:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return PlainTextResponse(
            engine.metrics.render(engine.served_model_name, engine.max_total_tokens),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

        media = request.headers.get("content-type", "").lower().split(";", 1)[0].strip()
        if media != "application/json":
            return JSONResponse(
                error_body("Unsupported Media Type: Only 'application/json' is allowed"),
                status_code=400,
            )
        try:
            body = await request.json()
        except ValueError as exc:
            return JSONResponse(error_body(f"Invalid JSON body: {exc}"), status_code=400)
        if not isinstance(body, dict):
            return JSONResponse(error_body("The request body must be a JSON object"), status_code=400)
        try:
            parsed = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            return JSONResponse(error_body(str(exc).splitlines()[0] + ": " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )), status_code=400)
        problem = validate_chat(engine, body)
        if problem:
            return JSONResponse(error_body(problem), status_code=400)
        if GROUP_BROKEN.is_set():
            await hang_generation(request.is_disconnected)
            return Response(status_code=499)  # nobody is listening any more
        try:
            run = await asyncio.to_thread(ChatRun, engine, body, parsed)
        except (ValueError, OSError) as exc:  # e.g. an image that cannot be loaded
            return JSONResponse(error_body(f"Failed to process the request: {exc}"), status_code=400)
        start = time.monotonic()
        engine.metrics.begin()
        if not parsed.stream:
            try:
                await asyncio.sleep(engine.token_delay * len(run.tokens))
                result = run.complete()
            finally:
                elapsed = time.monotonic() - start
                engine.metrics.end(run.prompt_tokens, run.completion_tokens, elapsed, elapsed)
            return JSONResponse(result)

        async def generate():
            first = None
            try:
                async for piece in run.stream():
                    if first is None:
                        first = time.monotonic() - start
                    yield piece
            finally:
                elapsed = time.monotonic() - start
                engine.metrics.end(run.prompt_tokens, run.completion_tokens, first or elapsed, elapsed, streaming=True)

        return StreamingResponse(generate(), media_type="text/event-stream")

    return app


# the uvicorn server of this process (main()), so hung generations end when a shutdown begins
SERVER = None


async def hang_generation(is_disconnected=None) -> None:
    """A generation on a group that lost a rank: never answers. Returns only when the client went
    away (SGLang aborts a request whose client disconnected) or the server shuts down (SGLang's
    SIGTERM kills its process tree), so a `systemctl stop` is not held up."""
    while True:
        await asyncio.sleep(0.5)
        if SERVER is not None and SERVER.should_exit:
            return
        if is_disconnected is not None and await is_disconnected():
            return


async def broken_health_generate() -> int:
    """SGLang's /health_generate on a hung group: no detokenizer reply, 503 after its timeout."""
    await asyncio.sleep(env_float("SGLANG_HEALTH_CHECK_TIMEOUT", 20.0))
    log("Health check failed. Server couldn't get a response from detokenizer (the group lost a rank)")
    return 503


def validate_chat(engine: Engine, body: dict) -> str | None:
    """The request checks of serving_chat._validate_request that matter here."""
    messages = body.get("messages") or []
    if not messages:
        return "Messages cannot be empty."
    if engine.config.get("model_type") == "minimax_m3_vl":
        error = lab_script.tool_call_pairing_error(messages)
        if error:
            return error
    if not engine.multimodal:
        media = lab_script.media_part_type(messages)
        if media:
            return f"Model only supports text input; received unsupported content type '{media}'."
    tool_choice = body.get("tool_choice")
    if tool_choice == "required" and not body.get("tools"):
        return "Tools cannot be empty if tool choice is set to required."
    max_out = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_out and max_out > engine.context_len:
        return (
            f"max_completion_tokens is too large: {max_out}."
            f"This model supports at most {engine.context_len} completion tokens."
        )
    return None


# --------------------------------------------------------------------------- main


def simulate_load(engine: Engine, load_seconds: float) -> None:
    archs = engine.config.get("architectures") or ["?"]
    shards = lab_script.count_shards(engine.model_path) or 4
    log(f"Load weight begin. avail mem=79.10 GB (simulated; {ENGINE_NAME} loads nothing)")
    if "hang-load" in engine.faults:
        log("fault hang-load: weight loading never finishes")
        while True:
            time.sleep(3600)
    steps = max(shards, 1)
    for k in range(steps + 1):
        pct = int(100 * k / steps)
        print(f"Loading safetensors checkpoint shards: {pct:3d}% Completed | {k}/{steps} "
              f"[{ENGINE_NAME}]", flush=True)
        if k < steps:
            time.sleep(load_seconds / steps)
    log(f"Load weight end. type={archs[0]}, dtype=torch.bfloat16, avail mem=20.00 GB, "
        f"mem usage=59.10 GB (simulated)")
    if "crash-after-load" in engine.faults:
        log("fault crash-after-load: torch.OutOfMemoryError: CUDA out of memory (simulated)")
        sys.exit(1)
    log(f"KV Cache is allocated. #tokens: {engine.max_total_tokens}, K size: 10.00 GB, "
        f"V size: 10.00 GB (simulated)")


def preload_modules() -> None:
    """Import what requests use before binding, so the first request is not slow."""
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
    from sglang.srt.entrypoints.openai import protocol, sse_utils  # noqa: F401
    from sglang.srt.function_call import function_call_parser  # noqa: F401
    from sglang.srt.parser import reasoning_parser  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    log(f"starting: this is the test-only lab engine, {ENGINE_NAME}; argv checked with SGLang's parser")
    args = parse_argv(argv)  # argparse errors: exit 2

    exit_code = os.environ.get("SGL_LAB_EXIT_AT_START")
    if exit_code:
        log(f"SGL_LAB_EXIT_AT_START={exit_code}: exiting right after argv parsing")
        return int(exit_code)

    errors = launch_errors(args)
    if errors:
        for error in errors:
            log(f"ERROR: {error}")
        return 1
    try:
        config = lab_script.read_model_config(args.model_path)
        engine = Engine(args, config)
    except lab_script.LabModelError as exc:
        log(f"ERROR: {exc}")
        return 1
    log(
        f"model={engine.model_path} family={engine.family} served_model_name={engine.served_model_name} "
        f"reasoning_parser={engine.reasoning_parser} tool_call_parser={engine.tool_call_parser} "
        f"tp_size={args.tp_size} ep_size={args.ep_size} context_len={engine.context_len} "
        f"api_key={'set' if engine.api_key else 'unset'} metrics={engine.enable_metrics}"
    )

    nnodes = int(getattr(args, "nnodes", 1) or 1)
    store = None
    if nnodes > 1:
        if not getattr(args, "dist_init_addr", None):
            log("ERROR: --nnodes > 1 needs --dist-init-addr <rank 0 host>:<port>")
            return 1
        try:
            log(f"multi-node: on a lost peer this rank will {'hang' if peer_loss_mode() == 'hang' else 'exit 1'} "
                f"(SGL_LAB_PEER_LOSS={peer_loss_mode()})")
        except ValueError as exc:
            log(f"ERROR: {exc}")
            return 1
        errors = interface_errors(os.environ, host_interfaces())
        for error in errors:
            log(f"ERROR: {error}")
        if errors:
            return 1
        try:
            split_addr(args.dist_init_addr)
        except RendezvousError as exc:
            log(f"ERROR: {exc}")
            return 1
        if getattr(args, "node_rank", 0):
            return run_worker_rank(args)
        store = start_rank0_store(args)
        if store is None:
            return 1
    elif getattr(args, "node_rank", 0):
        log(f"node_rank={args.node_rank}: only rank 0 serves HTTP (as in SGLang); idling")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(3600)

    preload_modules()
    load_seconds = env_float("SGL_LAB_LOAD_SECONDS", 3.0)
    if "slow-start" in engine.faults:
        load_seconds *= 10
    simulate_load(engine, load_seconds)

    import uvicorn

    warmup = env_float("SGL_LAB_WARMUP_SECONDS", 1.0)
    app = build_app(engine, warmup)
    log(f"Uvicorn binding http://{args.host}:{args.port} (warmup {warmup:.1f}s: /health 503 until ready)")
    global SERVER
    SERVER = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False, timeout_keep_alive=5))
    try:
        SERVER.run()
    finally:
        if store is not None:
            store.shutdown()  # like SGLang's shutdown broadcast: the other ranks exit with rank 0
    if not SERVER.started:  # e.g. the port is taken: uvicorn.run exits 3 (STARTUP_FAILURE) here
        log("ERROR: the HTTP server did not start")
        return 3
    log("shut down")
    return 0


if __name__ == "__main__":
    set_process_title()
    sys.exit(main())
