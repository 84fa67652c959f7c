"""The smg gateway in the lab: two engine hosts (rd1, rd2) behind rdrouter.

One converge for the module: the engines with site.yml (--skip-tags router), then the previous
toolkit's router role (commit OLD_TOOLKIT, sglang-router 0.3.2, plain HTTP) on rdrouter. Then, in order:

* migration to smg under client load (playbooks/migrate-gateway.yml, same port, TLS kept off so the
  clients' URL does not change): the longest client gap and the error count are printed (and written
  to reports/gateway/migration.json); no process of the old router is left;
* TLS on (playbooks/router.yml with the lab CA's certificate): 401 without a key or with a wrong key at
  the gateway, plain HTTP refused, the certificate verified against the lab CA, the probes through the
  gateway with --ca-file, the key in no command line;
* a redeploy whose new engine crashes (SGL_LAB_FAULT=crash-after-load) under HTTPS load: rolled back
  through smg's worker API, the other host untouched, 0 client errors.
The plain rolling redeploy through smg + TLS is tests/lab/test_redeploy.py (same lab group_vars).

The hosts and inventory of tests/lab/test_redeploy.py (tests/lab/inventories/redeploy, 10.77.0.31/.32/.39),
shared to save a fleet's converge: this module runs first (file order) and leaves the fleet up with smg and
TLS, which test_redeploy.py's own converge then finds nearly done (it also stands alone). SGL_LAB=1 runs it;
the fleet goes down with test_redeploy.py's fixture or at the end of `make test`.
"""

from __future__ import annotations

import io
import json
import os
import re
import ssl
import subprocess
import tarfile
import time

import pytest

from conftest import BIN, REPO, labctl, playbook, ssh
from gateway_load import Client

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INV = REPO / "tests/lab/inventories/redeploy/hosts.yml"  # shared with test_redeploy.py
HOSTS = {"rd1": "10.77.0.31", "rd2": "10.77.0.32"}
ROUTER = "10.77.0.39"
HTTP_URL = f"http://{ROUTER}:30000"
HTTPS_URL = f"https://{ROUTER}:30000"
LAB_CA = "/var/lib/sgl-lab/tls/ca.crt"
VERIFY = ssl.create_default_context(cafile=LAB_CA) if os.path.exists(LAB_CA) else None
KEY = "lab-secret-key"  # inventory/lab/group_vars/sglang_servers.yml (lab secret, plain on purpose)
MODEL = "MiniMax-M3"
# The toolkit before smg (its roles/sglang_router runs sglang-router 0.3.2): the fleet to migrate from.
OLD_TOOLKIT = "a6035dd8bec49c3b8506f3ce105ec72779a289ad"
NO_TLS = json.dumps({"sglang_router_tls_cert": "", "sglang_router_tls_key": ""})
WORKERS = {f"http://{a}:8000": True for a in HOSTS.values()}
REPORTS = REPO / "reports"


def timed(label: str, fn, *args, **kw):
    t0 = time.monotonic()
    out = fn(*args, **kw)
    print(f"[duration] {label}: {time.monotonic() - t0:.1f}s")
    return out


def old_router_playbook(tmp) -> str:
    """The previous toolkit's roles/sglang_router (and the control script it links to) in tmp, next to
    a playbook that runs it: `roles/` beside a playbook wins over roles_path."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", OLD_TOOLKIT, "roles/sglang_router",
                           "plugins/module_utils/sgl_router.py"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp, filter="tar")
    play = tmp / "old-router.yml"
    play.write_text("---\n- name: sglang-router 0.3.2 (the toolkit before smg)\n  hosts: sglang_routers\n"
                    "  gather_facts: false\n  roles: [sglang_router]\n")
    return str(play)


def ps(addr: str) -> str:
    return ssh(addr, "ps -eo user,args")


def workers() -> dict[str, bool]:
    out = ssh(ROUTER, "python3 /opt/sglang-router/libexec/sgl_router_ctl.py --config /etc/sglang-router/ctl.json list")
    return {w["url"]: w["healthy"] for w in json.loads(out)["workers"]}


def exec_start(addr: str) -> str:
    """The unit's command line (argv[] of systemctl show, without the runtime fields)."""
    out = ssh(addr, "systemctl show sglang.service -p ExecStart --value")
    return re.search(r"argv\[\]=(.*?) ;", out).group(1)


def main_pid(addr: str) -> str:
    return ssh(addr, "systemctl show sglang.service -p MainPID --value").strip()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """rd1, rd2 serving (site.yml without the router), rdrouter running sglang-router 0.3.2."""
    timed("labctl up", labctl, "up", "-i", str(INV))
    # the engines' own probes are test_site.py's and test_redeploy.py's business: off here (time)
    run = timed("site.yml --skip-tags router", playbook, "site.yml", "--skip-tags", "router",
                "-e", "probes_enabled=false", inventory=INV)
    assert run.rc == 0, run.out[-6000:]
    old = old_router_playbook(tmp_path_factory.mktemp("old-toolkit"))
    run = timed("old router (sglang-router 0.3.2)", playbook, old, "-e", NO_TLS, inventory=INV)
    assert run.rc == 0, run.out[-6000:]
    assert "sglang::router" in ps(ROUTER)
    yield HOSTS  # left up for test_redeploy.py (same fleet)


def test_migration_from_sglang_router_under_load(fleet):
    assert "/venvs/sglang-router-0.3.2" in ssh(ROUTER, "readlink /opt/sglang-router/current")
    with Client(HTTP_URL, KEY, MODEL, threads=4, pause=0.02) as client:
        time.sleep(3)
        run = timed("migrate-gateway.yml", playbook, "playbooks/migrate-gateway.yml", "-e", NO_TLS, inventory=INV)
        time.sleep(3)
    gap, errors = client.longest_gap(), len(client.errors)
    note = {"longest_gap_s": round(gap, 3), "errors": errors, "ok": len(client.ok), "error_lines": client.errors[:10]}
    (REPORTS / "gateway").mkdir(parents=True, exist_ok=True)
    (REPORTS / "gateway" / "migration.json").write_text(json.dumps(note, indent=2))
    print(f"MIGRATION sglang-router 0.3.2 -> smg under load: longest client gap {gap:.2f}s, "
          f"{errors} client errors, {len(client.ok)} ok", *client.errors[:10], sep="\n")
    assert run.rc == 0, run.out[-6000:]
    assert "no process of sglang-router is left" in run.out
    procs = ps(ROUTER)
    assert "sglang::router" not in procs and "smg::router" in procs
    assert "/venvs/smg-1.13.0" in ssh(ROUTER, "readlink /opt/sglang-router/current")
    assert workers() == WORKERS
    # one restart's gap, not an outage: the traffic resumed on smg
    assert gap < 20, client.errors[:10]
    assert client.ok and client.ok[-1] > client.stopped - 5


def test_tls_auth_and_plain_http_refused(fleet):
    import httpx

    run = timed("router.yml (TLS on)", playbook, "playbooks/router.yml", inventory=INV)
    assert run.rc == 0, run.out[-6000:]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": 16}
    chat = HTTPS_URL + "/v1/chat/completions"
    assert httpx.post(chat, json=body, timeout=60, verify=VERIFY).status_code == 401
    assert httpx.post(chat, json=body, timeout=60, verify=VERIFY,
                      headers={"Authorization": "Bearer wrong-key"}).status_code == 401
    ok = httpx.post(chat, json=body, timeout=60, verify=VERIFY, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["model"] == MODEL, ok.text
    # /v1/models of the gateway: the served model name (open without a key upstream)
    assert [m["id"] for m in httpx.get(HTTPS_URL + "/v1/models", timeout=10, verify=VERIFY).json()["data"]] == [MODEL]
    # plain HTTP to the TLS port gets no HTTP answer
    with pytest.raises(httpx.HTTPError):
        httpx.post(HTTP_URL + "/v1/chat/completions", json=body, timeout=10, headers={"Authorization": f"Bearer {KEY}"})
    # the certificate is the lab CA's: without that CA it is not trusted
    with pytest.raises(httpx.ConnectError):
        httpx.get(HTTPS_URL + "/health", timeout=10)
    # the key and the TLS key are credentials: not in the unit or any command line
    assert KEY not in ssh(ROUTER, "cat /etc/systemd/system/sglang-router.service; systemctl show sglang-router -p ExecStart")
    assert KEY not in ps(ROUTER) and "BEGIN" not in ps(ROUTER)
    assert ssh(ROUTER, "stat -c %a /etc/sglang-router/tls/key.pem").strip() == "600"
    env = {**os.environ, "SGL_API_KEY": KEY}
    probe = subprocess.run([str(BIN / "sgl-deploy"), "probe", "--base-url", HTTPS_URL, "--router", "--model", MODEL,
                            "--ca-file", LAB_CA, "--only", "models,chat,streaming,auth", "--quiet"],
                           capture_output=True, text=True, env=env, timeout=300)
    print(probe.stdout)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert workers() == WORKERS


def test_crashing_engine_rolls_back_through_smg_with_zero_client_errors(fleet):
    before = {h: exec_start(a) for h, a in HOSTS.items()}
    rd2_pid = main_pid(HOSTS["rd2"])
    run_id = "lab-gw-crash-" + time.strftime("%H%M%S")
    crash = json.dumps({"sglang_service_environment": {"SGL_LAB_LOAD_SECONDS": "3", "SGL_LAB_FAULT": "crash-after-load"},
                        "probes_only": ["models", "chat"]})  # the rollback's probes of the old version: short
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    with Client(HTTPS_URL, KEY, MODEL, LAB_CA) as client:
        time.sleep(2)
        proc = timed("redeploy (crashing engine)", subprocess.run,
                     [str(BIN / "sgl-deploy"), "redeploy", "-i", str(INV), "--run-id", run_id, "-q", "-e", crash],
                     cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
        time.sleep(2)
    print(client.summary(), *client.errors[:10], sep="\n")
    assert proc.returncode == 1, proc.stderr[-4000:]
    rep = json.loads((REPORTS / "redeploy" / run_id / "rd1.json").read_text())
    assert rep["status"] == "rolled_back", rep.get("failure")
    assert [s["step"] for s in rep["steps"]][-1] == "restored"
    assert not (REPORTS / "redeploy" / run_id / "rd2.json").exists()  # the rollout stopped before rd2
    assert exec_start(HOSTS["rd1"]) == before["rd1"] and exec_start(HOSTS["rd2"]) == before["rd2"]
    assert main_pid(HOSTS["rd2"]) == rd2_pid  # rd2 untouched: not even restarted
    assert "SGL_LAB_FAULT" not in ssh(HOSTS["rd1"], "systemctl show sglang -p Environment")
    assert workers() == WORKERS
    assert client.errors == [], client.errors[:10]
    assert len(client.ok) >= 20
