"""Multi-node tensor parallel on the lab (issue 9): one MiniMax-M3 replica over two hosts.

Inventory tests/lab/inventories/multinode (mn1 = rank 0, mn2 = rank 1, 4 replayed H100s each,
sglang_replicas {m3-lab: [mn1, mn2]}). The hosts run the lab engine, which behaves like SGLang's
--dist-init-addr rendezvous (rank 0 loads and opens HTTP only after rank 1 joined). Booted and
torn down here (`labctl down -i`, only these hosts) unless SGL_LAB_KEEP=1.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, labctl, playbook, ssh

INVENTORY = REPO / "tests/lab/inventories/multinode/hosts.yml"
HOSTS = {"mn1": "10.77.0.51", "mn2": "10.77.0.52"}
DIST_INIT_ADDR = "10.77.0.51:20000"
UNIT = "/etc/systemd/system/sglang.service"
LAB_STATE = Path(os.environ.get("SGL_LAB_STATE", "/var/lib/sgl-lab"))


@pytest.fixture(scope="module")
def group():
    labctl("up", "-i", str(INVENTORY))
    yield HOSTS
    if os.environ.get("SGL_LAB_KEEP") != "1":
        labctl("down", "-i", str(INVENTORY))


def report_stamps() -> set[str]:
    return {p.parent.parent.name for p in (REPO / "reports").glob("*/mn1/report.json")}


@pytest.fixture(scope="module")
def converged(group):
    """site.yml has converged on the two-host group; returns (run, probe report folder of that run)."""
    before = report_stamps()
    run = playbook("site.yml", inventory=INVENTORY, timeout=2400)
    assert run.rc == 0, run.out[-8000:]
    new = sorted(report_stamps() - before)
    assert new, "site.yml wrote no probe report for mn1"
    return run, REPO / "reports" / new[-1]


def unit_lines(addr: str, prefix: str) -> list[str]:
    text = ssh(addr, f"cat {UNIT}")
    return [ln[len(prefix):] for ln in text.splitlines() if ln.startswith(prefix)]


def exec_argv(addr: str) -> list[str]:
    [line] = unit_lines(addr, "ExecStart=")
    return shlex.split(line)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def unit_show(addr: str, *props: str) -> dict:
    out = ssh(addr, f"systemctl show sglang.service -p {','.join(props)}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_two_host_replica_converges(converged):
    run, _ = converged
    for host in HOSTS:
        assert run.recap[host]["failed"] == 0 and run.recap[host]["unreachable"] == 0
    # rank 1 is ready once it joined rank 0's rendezvous; rank 0 once it serves
    assert f"[mn2] worker rank active, joined rank 0's rendezvous {DIST_INIT_ADDR}" in run.out
    assert "[mn1] ready: /health 200" in run.out


def test_units_carry_node_ranks_and_the_same_dist_init_addr(converged):
    argvs = {host: exec_argv(addr) for host, addr in HOSTS.items()}
    for rank, host in enumerate(("mn1", "mn2")):
        argv = argvs[host]
        assert flag(argv, "--nnodes") == "2"
        assert flag(argv, "--node-rank") == str(rank)
        assert flag(argv, "--dist-init-addr") == DIST_INIT_ADDR
        assert flag(argv, "--tp-size") == "8"  # 4 GPUs per node x 2 nodes
        env = unit_lines(HOSTS[host], "Environment=")
        assert "NCCL_SOCKET_IFNAME=host0" in env and "GLOO_SOCKET_IFNAME=host0" in env
    strip = {"--node-rank"}
    same = [[a for i, a in enumerate(v) if a not in strip and (i == 0 or v[i - 1] not in strip)] for v in argvs.values()]
    assert same[0] == same[1], "the two units differ in more than --node-rank"


def test_real_sglang_parser_accepts_both_argvs(converged):
    code = (
        "import json, sys\n"
        "from sglang.srt.server_args import prepare_server_args\n"
        "a = prepare_server_args(json.loads(sys.argv[1]))\n"
        "print('RESULT ' + json.dumps({'nnodes': a.nnodes, 'node_rank': a.node_rank, "
        "'dist_init_addr': a.dist_init_addr, 'tp_size': a.tp_size, 'served': a.served_model_name}))\n"
    )
    for rank, (host, addr) in enumerate(HOSTS.items()):
        argv = exec_argv(addr)
        server_args = argv[2:]  # minus the launcher (python, engine script)
        if "--config" in server_args:  # %d is systemd's credentials directory: not a path outside the unit
            i = server_args.index("--config")
            del server_args[i:i + 2]
        out = ssh(addr, f"/opt/sglang/current/bin/python -c {shlex.quote(code)} {shlex.quote(json.dumps(server_args))}")
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
        parsed = json.loads(line[len("RESULT "):])
        assert parsed == {"nnodes": 2, "node_rank": rank, "dist_init_addr": DIST_INIT_ADDR, "tp_size": 8,
                          "served": "MiniMax-M3"}, (host, parsed)


def test_only_rank0_is_probed_and_serves(converged):
    _, folder = converged
    report = json.loads((folder / "mn1" / "report.json").read_text())
    assert report["passed"], report
    assert not (folder / "mn2").exists(), "rank 1 was probed"
    assert ssh(HOSTS["mn1"], "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health") == "200"
    assert ssh(HOSTS["mn2"], "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health",
               check=False) == "000", "rank 1 must not serve HTTP"


def test_rank1_joined_rank0s_rendezvous(converged):
    worker = ssh(HOSTS["mn2"], "journalctl -u sglang -o cat --no-pager")
    assert f"joined the rendezvous at {DIST_INIT_ADDR} (2 nodes)" in worker
    leader = ssh(HOSTS["mn1"], "journalctl -u sglang -o cat --no-pager")
    assert "node_rank=1 joined from 10.77.0.52" in leader and "rendezvous: all 2 ranks joined" in leader
    # and it still holds that connection (what the worker readiness gate looks for)
    assert DIST_INIT_ADDR in ssh(HOSTS["mn2"], "ss -Htn state established '( dport = :20000 )'")


def test_rerun_changes_and_restarts_nothing(converged):
    before = {h: unit_show(a, "MainPID")["MainPID"] for h, a in HOSTS.items()}
    run = playbook("site.yml", inventory=INVENTORY, timeout=2400)
    assert run.rc == 0, run.out[-6000:]
    for host in HOSTS:
        assert run.changed(host) == 0, f"{host} changed on a no-op rerun:\n{run.out[-4000:]}"
    assert before == {h: unit_show(a, "MainPID")["MainPID"] for h, a in HOSTS.items()}


def test_a_change_on_rank1_restarts_the_group_rank0_first(converged, tmp_path):
    """Only mn2's unit changes; both ranks restart (a group is one model), rank 0 first. The group
    watchdog sees the deploy lock and stays out of it (issue 19: no fights with deploys)."""
    before = {h: unit_show(a, "MainPID")["MainPID"] for h, a in HOSTS.items()}
    since = host_now("mn1")
    inv = tmp_path / "inventory"
    shutil.copytree(INVENTORY.parent, inv)  # follows the group_vars links
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "mn2.yml").write_text(json.dumps({"sglang_service_nccl_environment": {"NCCL_DEBUG": "WARN"}}))
    run = playbook("site.yml", inventory=inv / "hosts.yml", timeout=2400)
    assert run.rc == 0, run.out[-6000:]
    assert "NCCL_DEBUG=WARN" in unit_lines(HOSTS["mn2"], "Environment=")
    assert "NCCL_DEBUG=WARN" not in unit_lines(HOSTS["mn1"], "Environment=")
    after = {h: unit_show(a, "MainPID", "ActiveEnterTimestampMonotonic") for h, a in HOSTS.items()}
    for host in HOSTS:
        assert after[host]["MainPID"] != before[host], f"{host} was not restarted"
    # the nspawn hosts share the kernel's monotonic clock: rank 0 (re)started before rank 1
    assert int(after["mn1"]["ActiveEnterTimestampMonotonic"]) < int(after["mn2"]["ActiveEnterTimestampMonotonic"])
    assert ssh(HOSTS["mn1"], "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health") == "200"
    journal = watchdog_journal("mn1", since)
    assert "deploy in progress, skipping: the deploy lock is held by" in journal, journal[-3000:]
    assert "RESTARTING THE GROUP" not in journal, journal[-3000:]


def _netns_pid(host: str) -> int:
    """PID of the lab host's systemd (its network namespace) as the controller sees it."""
    nspawn = (LAB_STATE / "hosts" / host / "nspawn.pid").read_text().strip()
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", nspawn], capture_output=True, text=True, check=True)
    pids = [int(pid) for pid, comm in (ln.split(None, 1) for ln in out.stdout.splitlines()) if comm.strip() == "systemd"]
    assert len(pids) == 1, f"no single systemd child of nspawn {nspawn}: {out.stdout!r}"
    # never touch the controller's own firewall
    assert os.readlink(f"/proc/{pids[0]}/ns/net") != os.readlink("/proc/self/ns/net")
    return pids[0]


def test_blocked_rendezvous_port_fails_preflight_clearly(converged):
    """A firewall on rank 0 drops new connections to the rendezvous port from rank 1."""
    pid = _netns_pid("mn1")
    rule = ["INPUT", "-p", "tcp", "--syn", "-s", HOSTS["mn2"], "--dport", "20000", "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-I", *rule], check=True)
    try:
        start = time.time()
        run = playbook("playbooks/preflight.yml", "-e", "sglang_plan_rendezvous_timeout_s=5", inventory=INVENTORY,
                       timeout=900)
        elapsed = time.time() - start
    finally:
        subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-D", *rule], check=True)
    assert run.rc != 0
    assert run.recap["mn2"]["failed"] == 1 and run.recap["mn1"]["failed"] == 0
    assert "mn2: preflight failed (1 problem)" in run.out, run.out[-4000:]
    assert "[rendezvous] found mn2 cannot reach rank 0 (mn1) at 10.77.0.51:20000 (TCP, 5 s)" in run.out
    assert "Fix: allow TCP 20000" in run.out and "sglang_plan_dist_init_port" in run.out
    assert elapsed < 300, f"took {elapsed:.0f}s"
    # nothing was touched: the group still serves
    assert ssh(HOSTS["mn1"], "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health") == "200"


# --------------------------------------------------------------------------- issue 19: the group heals itself
# The lab engine runs in SGL_LAB_PEER_LOSS=hang (its default): like real SGLang (sglang#3099), rank 0
# stays up with /health 200 when rank 1 dies, and every generation hangs. The multinode inventory runs
# the group watchdog with a 2 s interval, a 5 s generation deadline, 2 failures before a restart,
# 120 s start grace (a crashed rank ends it), at most 3 restarts per 900 s, backoff 30 s doubling to 60 s.

API_KEY = "lab-secret-key"
LOCK = "/run/sgl-deploy/group.lock"
RECOVERY_LIMIT_S = 150


def chat_answers(timeout: float = 5.0) -> bool:
    """One chat completion against rank 0 from the controller, as a client would send it."""
    import urllib.request

    body = json.dumps({"model": "MiniMax-M3", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "What is 2+3?"}]}).encode()
    req = urllib.request.Request(f"http://{HOSTS['mn1']}:8000/v1/chat/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200 and bool(json.loads(resp.read()).get("choices"))
    except Exception:
        return False


def wait_serving(limit: float) -> float:
    """Seconds until the group answers chat again (fails after ``limit``)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if chat_answers():
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"the group did not answer chat within {limit:.0f} s")


def host_now(host: str) -> int:
    return int(ssh(HOSTS[host], "date +%s").strip())


def watchdog_journal(host: str, since: int) -> str:
    return ssh(HOSTS[host], f"journalctl -u sgl-group-watchdog -o cat --no-pager --since @{since}")


def kill9_engine(host: str) -> str:
    pid = unit_show(HOSTS[host], "MainPID")["MainPID"]
    assert pid != "0", f"{host}: sglang is not running"
    ssh(HOSTS[host], f"kill -9 {pid}")
    return pid


def wait_journal(host: str, since: int, text: str, limit: float) -> str:
    deadline = time.monotonic() + limit
    journal = ""
    while time.monotonic() < deadline:
        journal = watchdog_journal(host, since)
        if text in journal:
            return journal
        time.sleep(1)
    raise AssertionError(f"{host}: no {text!r} in the watchdog journal within {limit:.0f} s:\n{journal[-3000:]}")


@pytest.fixture
def serving(converged):
    """The group answers chat before the test breaks it (an earlier test may have just healed it), and
    the watchdog starts from a fresh restart budget, as after a deploy: it clears its restart history
    when it sees a deploy lock (the earlier tests' restarts count in the same 900 s window)."""
    wait_serving(RECOVERY_LIMIT_S)
    for host, addr in HOSTS.items():
        assert ssh(addr, "systemctl is-active sgl-group-watchdog").strip() == "active", host
    since = host_now("mn1")
    lock = json.dumps({"holder": "lab test (fresh budget)", "since": since, "expires_at": since + 120})
    ssh(HOSTS["mn1"], f"mkdir -p /run/sgl-deploy && echo {shlex.quote(lock)} > {LOCK}")
    try:
        wait_journal("mn1", since, "deploy in progress, skipping", 30)
    finally:
        ssh(HOSTS["mn1"], f"rm -f {LOCK}")
    wait_journal("mn1", since, "deploy lock released", 30)
    return converged


def test_watchdog_runs_on_every_rank_without_the_key(serving):
    for host, addr in HOSTS.items():
        assert ssh(addr, "stat -c %a /etc/sglang/group-watchdog.json").strip() == "600"
        config = ssh(addr, "cat /etc/sglang/group-watchdog.json")
        assert API_KEY not in config
        assert json.loads(config)["rank"] == (0 if host == "mn1" else 1)
        state = json.loads(ssh(addr, "curl -s http://127.0.0.1:20090/state"))
        assert state["role"] == ("leader" if host == "mn1" else "follower") and API_KEY not in json.dumps(state)
        assert API_KEY not in ssh(addr, "journalctl -u sgl-group-watchdog -o cat --no-pager")
    security = ssh(HOSTS["mn1"], "systemd-analyze security sgl-group-watchdog.service --no-pager | tail -1")
    print(f"systemd-analyze security sgl-group-watchdog.service: {security.strip()}")


def test_kill9_of_rank1_is_healed_by_the_watchdog(serving):
    since = host_now("mn1")
    old_rank0 = unit_show(HOSTS["mn1"], "MainPID")["MainPID"]
    start = time.monotonic()
    kill9_engine("mn2")
    # the realistic fault: rank 0 stays up, /health answers, generation hangs
    time.sleep(1)
    assert unit_show(HOSTS["mn1"], "MainPID")["MainPID"] == old_rank0
    assert ssh(HOSTS["mn1"], "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health") == "200"
    assert not chat_answers(timeout=3)
    wait_serving(RECOVERY_LIMIT_S)
    took = time.monotonic() - start
    print(f"\nRECOVERY kill -9 of rank 1 (mn2's engine): the group answered chat again after {took:.1f} s")
    leader, follower = watchdog_journal("mn1", since), watchdog_journal("mn2", since)
    print("\n".join(ln for ln in leader.splitlines() if "RESTARTING" in ln or "healthy" in ln))
    # the first reason is rank 1's unit waiting in systemd's auto-restart, or (once it runs again, hung
    # in a rendezvous that never answers) the one-token chat deadline
    assert "RESTARTING THE GROUP" in leader, leader[-3000:]
    assert "rank 1 (mn2): unit sglang.service is" in leader or "one-token chat did not answer" in leader
    assert "rank 0 restarts the group" in follower and "starting sglang.service here" in follower, follower[-3000:]
    assert took < RECOVERY_LIMIT_S


def test_restart_of_rank1s_host_is_healed_by_the_watchdog(serving):
    since = host_now("mn1")
    start = time.monotonic()
    labctl("restart", "-i", str(INVENTORY), "--hosts", "mn2")
    wait_serving(RECOVERY_LIMIT_S)
    took = time.monotonic() - start
    print(f"\nRECOVERY restart of rank 1's host (mn2): the group answered chat again after {took:.1f} s "
          "(including the host's boot)")
    leader = watchdog_journal("mn1", since)
    print("\n".join(ln for ln in leader.splitlines() if "RESTARTING" in ln or "healthy" in ln))
    assert "RESTARTING THE GROUP" in leader, leader[-3000:]
    assert took < RECOVERY_LIMIT_S + 120


def test_the_watchdog_does_not_fight_a_deploy_that_holds_the_lock(serving):
    """A deploy holds the lock (here on rank 1, as site.yml's serve role does on every rank) while the
    group is broken: the watchdog skips and restarts nothing; once released it heals the group."""
    since = host_now("mn1")
    now = host_now("mn2")
    lock = json.dumps({"holder": "lab test (as site.yml's serve role)", "since": now, "expires_at": now + 600})
    ssh(HOSTS["mn2"], f"mkdir -p /run/sgl-deploy && echo {shlex.quote(lock)} > {LOCK}")
    try:
        rank0 = unit_show(HOSTS["mn1"], "MainPID")["MainPID"]
        kill9_engine("mn2")
        time.sleep(30)  # 15 checks at 2 s: without the lock the watchdog restarts after ~15 s
        journal = watchdog_journal("mn1", since)
        assert "deploy in progress, skipping: the deploy lock is held by lab test" in journal, journal[-3000:]
        assert "RESTARTING THE GROUP" not in journal, journal[-3000:]
        assert unit_show(HOSTS["mn1"], "MainPID")["MainPID"] == rank0, "rank 0 was restarted under the lock"
        assert not chat_answers(timeout=3), "the group healed by itself: the fault was not realistic"
    finally:
        ssh(HOSTS["mn2"], f"rm -f {LOCK}")
    start = time.monotonic()
    wait_serving(RECOVERY_LIMIT_S)
    print(f"\nRECOVERY after the deploy lock was released: {time.monotonic() - start:.1f} s")
    journal = watchdog_journal("mn1", since)
    assert "deploy lock released" in journal and "RESTARTING THE GROUP" in journal, journal[-3000:]
    # rank 1's unit has been active (hung in the rendezvous) for a while: only the generation shows it
    after = journal.split("deploy lock released", 1)[1]
    assert "one-token chat did not answer within 5 s (generation hangs)" in after, after[-3000:]


def test_a_permanently_broken_rank_gets_a_bounded_number_of_restarts(serving):
    dropin = "/etc/systemd/system/sglang.service.d/zz-lab-broken.conf"
    since = host_now("mn1")
    ssh(HOSTS["mn2"], f"mkdir -p {os.path.dirname(dropin)} && printf '[Service]\\nEnvironment=SGL_LAB_EXIT_AT_START=1\\n'"
                      f" > {dropin} && systemctl daemon-reload")
    try:
        kill9_engine("mn2")
        deadline = time.monotonic() + 600
        journal = ""
        while time.monotonic() < deadline and "GIVING UP" not in journal:
            time.sleep(5)
            journal = watchdog_journal("mn1", since)
        assert "GIVING UP" in journal, journal[-4000:]
        time.sleep(40)  # a grace period and more: nothing restarts any more
        journal = watchdog_journal("mn1", since)
        restarts = journal.count("RESTARTING THE GROUP")
        giving_up = [ln for ln in journal.splitlines() if "GIVING UP" in ln]
        print(f"\nBOUNDED: {restarts} group restarts, then: {giving_up[0]}")
        assert restarts == 3, journal[-4000:]
        assert len(giving_up) == 1 and "rank 1 (mn2)" in giving_up[0]
        assert "backing off" in journal
    finally:
        ssh(HOSTS["mn2"], f"rm -f {dropin} && systemctl daemon-reload && systemctl reset-failed sglang || true")
        ssh(HOSTS["mn1"], "systemctl restart sglang")
        ssh(HOSTS["mn2"], "systemctl restart sglang")
    wait_serving(RECOVERY_LIMIT_S)
    time.sleep(5)
    assert "group healthy again" in watchdog_journal("mn1", since)
