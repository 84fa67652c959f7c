#!/usr/bin/env python3
"""labctl: the local lab of real systemd hosts (TEST/LAB ONLY, never used by production roles).

Each lab host is a Debian 12 root made with debootstrap (built once, cached), booted with
``systemd-nspawn --boot`` so systemd is PID 1, attached to the bridge ``sgllab0`` with its own
address, running sshd with a key the lab generates. Ansible reaches it over plain SSH.

The inventory is the source of truth: every host with ``lab_gpu_profile`` set is a lab host.

    labctl.py up     [-i inventory/lab/hosts.yml] [--hosts a,b]   create/boot (idempotent)
    labctl.py down   [-i ...] [--all]                            stop and remove
    labctl.py status [-i ...]
    labctl.py reset  -i ... --hosts a                            recreate from the base root
    labctl.py restart -i ... --hosts a                           power off and boot the same root (a reboot)
    labctl.py base                                               build the cached base root
    labctl.py hub-up | hub-down                                  the lab's ModelScope-protocol hub

`up` also makes the lab's TLS material (once, with openssl): a CA in /var/lib/sgl-lab/tls/ca.crt and,
per host, <name>.crt/<name>.key signed by it for the host's address and name (the gateway's
certificate in the lab inventories; the probes verify against ca.crt). `up` also starts the hub (lab/hub/server.py on 10.77.0.1:18080, access log in
/var/lib/sgl-lab/hub/access.log) serving generated repos SglLab/MiniMax-M3-Lab and
SglLab/MiniMax-M2.5-Lab; `down --all` stops it.

Host variables read from the inventory:
    ansible_host          address on 10.77.0.0/24 (required)
    lab_gpu_profile       folder name under tests/fixtures/gpu ("no-gpu": no nvidia-smi at all)
    lab_models_tmpfs_mb   optional: mount a tmpfs of that size at /srv/models (disk-full tests)
    lab_fabric_manager    optional bool: run a stand-in nvidia-fabricmanager.service (8-GPU profiles)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("SGL_LAB_STATE", "/var/lib/sgl-lab"))
CACHE = Path(os.environ.get("SGL_LAB_CACHE", "/var/cache/sgl-lab"))
BASE = CACHE / "rootfs" / "bookworm"
UV_CACHE = CACHE / "uv"
KEY = STATE / "ssh" / "id_ed25519"
TLS = STATE / "tls"
TLS_DAYS = 90  # over the role's 30-day expiry warning
BRIDGE = "sgllab0"
BRIDGE_ADDR = "10.77.0.1/24"
SUBNET = "10.77.0.0/24"
MIRROR = os.environ.get("SGL_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "openssh-server", "iproute2",
    "rsync", "ca-certificates", "sudo", "procps", "curl", "acl", "less", "libpython3.11",
]
# Bumping this rebuilds the cached base root.
BASE_VERSION = "3:" + ",".join(PACKAGES)


def log(msg: str) -> None:
    print(f"[labctl] {msg}", flush=True)


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


# ---------------------------------------------------------------- inventory


def load_hosts(inventory: Path, only: list[str] | None) -> dict[str, dict]:
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    exe = str(ansible_inventory) if ansible_inventory.exists() else "ansible-inventory"
    out = run([exe, "-i", str(inventory), "--list"], capture_output=True).stdout
    data = json.loads(out)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    hosts = {h: v for h, v in hostvars.items() if "lab_gpu_profile" in v}
    if only:
        missing = [h for h in only if h not in hosts]
        if missing:
            sys.exit(f"labctl: hosts {missing} are not lab hosts in {inventory}")
        hosts = {h: hosts[h] for h in only}
    for name, hv in hosts.items():
        if "ansible_host" not in hv:
            sys.exit(f"labctl: {inventory}: host {name} has lab_gpu_profile but no ansible_host")
    return hosts


# ---------------------------------------------------------------- base root


def build_base() -> None:
    stamp = BASE / "etc" / "sgl-lab-base"
    if stamp.exists() and stamp.read_text().strip() == BASE_VERSION:
        return
    tmp = BASE.with_name(BASE.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (CACHE / "debs").mkdir(parents=True, exist_ok=True)
    log(f"building the Debian 12 base root in {BASE} (debootstrap, about a minute)")
    run([
        "debootstrap", "--variant=minbase", f"--cache-dir={CACHE / 'debs'}",
        "--include=" + ",".join(PACKAGES), "bookworm", str(tmp), MIRROR,
    ], stdout=subprocess.DEVNULL)
    # lab-wide settings: no first-boot prompts, no host keys shared between hosts
    for key in tmp.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    (tmp / "etc/machine-id").write_text("")
    (tmp / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (tmp / "etc/ssh/sshd_config.d/10-sgl-lab.conf").write_text(
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    )
    wants = tmp / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # keep the journal small
    (tmp / "etc/systemd/journald.conf.d").mkdir(parents=True, exist_ok=True)
    (tmp / "etc/systemd/journald.conf.d/10-sgl-lab.conf").write_text("[Journal]\nSystemMaxUse=64M\n")
    (tmp / "etc/sgl-lab-base").write_text(BASE_VERSION + "\n")
    shutil.rmtree(BASE, ignore_errors=True)
    BASE.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(BASE)


def ensure_key() -> None:
    if KEY.exists():
        return
    KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgl-lab", "-f", str(KEY)])


def ensure_tls(hosts: dict[str, dict]) -> None:
    """The lab CA (once) and a certificate per host for IP:<ansible_host> and DNS:<name>, renewed
    when missing, for another address, or within 45 days of expiry."""
    TLS.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_crt = TLS / "ca.key", TLS / "ca.crt"
    if not (ca_key.exists() and ca_crt.exists()):
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "3650", "-subj", "/CN=sgl-lab CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            capture_output=True)
    for name, hv in hosts.items():
        addr = str(hv["ansible_host"])
        crt, key, ext = TLS / f"{name}.crt", TLS / f"{name}.key", TLS / f"{name}.ext"
        want = f"subjectAltName=IP:{addr},DNS:{name}\nextendedKeyUsage=serverAuth\n"
        if crt.exists() and key.exists() and ext.exists() and ext.read_text() == want and run(
                ["openssl", "x509", "-checkend", str(45 * 86400), "-noout", "-in", str(crt)],
                check=False, capture_output=True).returncode == 0:
            continue
        csr = TLS / f"{name}.csr"
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"], capture_output=True)
        ext.write_text(want)
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(crt), "-days", str(TLS_DAYS), "-extfile", str(ext)], capture_output=True)
        csr.unlink()
        log(f"{name}: TLS certificate for {addr} signed by the lab CA ({crt})")


# ---------------------------------------------------------------- network


def ensure_network() -> None:
    if run(["ip", "link", "show", BRIDGE], check=False, capture_output=True).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-o", "addr", "show", BRIDGE], capture_output=True).stdout
    if BRIDGE_ADDR.split("/")[0] + "/" not in addrs:
        run(["ip", "addr", "add", BRIDGE_ADDR, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # NAT so lab hosts reach the package registries (PyPI, Debian) like a real fleet would
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    if shutil.which("iptables"):
        rule = ["POSTROUTING", "-s", SUBNET, "!", "-o", BRIDGE, "-j", "MASQUERADE"]
        if run(["iptables", "-t", "nat", "-C", *rule], check=False, capture_output=True).returncode:
            run(["iptables", "-t", "nat", "-A", *rule])
    else:
        log("iptables missing: lab hosts get no route to package registries")


def drop_network() -> None:
    if shutil.which("iptables"):
        rule = ["POSTROUTING", "-s", SUBNET, "!", "-o", BRIDGE, "-j", "MASQUERADE"]
        while run(["iptables", "-t", "nat", "-C", *rule], check=False, capture_output=True).returncode == 0:
            run(["iptables", "-t", "nat", "-D", *rule])
    run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)


# ---------------------------------------------------------------- hosts


def host_dir(name: str) -> Path:
    return STATE / "hosts" / name


def pid_of(name: str) -> int | None:
    pidfile = host_dir(name) / "nspawn.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if any(b"systemd-nspawn" in part for part in cmdline[:1]):
            return pid
    except (OSError, ValueError):
        pass
    return None


def ssh_cmd(addr: str, command: str) -> list[str]:
    return [
        "ssh", "-q", "-i", str(KEY), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "ConnectTimeout=3", "-o", "BatchMode=yes", f"root@{addr}", command,
    ]


def port_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1):
            return True
    except OSError:
        return False


def trust_controller_cas(root: Path) -> None:
    """Give the host the controller's extra CAs (e.g. an egress proxy's), as a site CA would be."""
    added = 0
    for pem in Path("/etc/ssl/certs").glob("*.pem"):
        if pem.is_file() and not pem.is_symlink():
            shutil.copy(pem, root / "usr/local/share/ca-certificates" / (pem.stem + ".crt"))
            added += 1
    if added:
        run(["chroot", str(root), "update-ca-certificates"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare_root(name: str, hv: dict) -> Path:
    root = host_dir(name) / "rootfs"
    if root.exists():
        return root
    log(f"{name}: creating root from the base")
    tmp = root.with_name("rootfs.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", str(BASE), str(tmp)])
    addr = hv["ansible_host"]
    (tmp / "etc/hostname").write_text(name + "\n")
    (tmp / "etc/hosts").write_text(f"127.0.0.1 localhost\n{addr} {name}\n")
    (tmp / "etc/systemd/network/10-host0.network").write_text(
        "# sgl-lab: sorts before systemd's 80-container-host0.network\n"
        f"[Match]\nName=host0\n\n[Network]\nAddress={addr}/24\nGateway={BRIDGE_ADDR.split('/')[0]}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    ssh_dir = tmp / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(KEY.with_suffix(".pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    run(["chroot", str(tmp), "ssh-keygen", "-A"], stdout=subprocess.DEVNULL)
    trust_controller_cas(tmp)
    lab_etc = tmp / "etc/sgl-lab"
    lab_etc.mkdir(exist_ok=True)
    profile = hv["lab_gpu_profile"]
    (lab_etc / "gpu-profile").write_text(profile + "\n")
    (lab_etc / "README").write_text(
        "This is a LAB host (systemd-nspawn). /usr/bin/nvidia-smi here replays captures from real\n"
        "H100 hosts (tests/fixtures/gpu); it is a test stand-in, not NVIDIA's tool.\n"
    )
    if profile != "no-gpu":
        (tmp / "usr/bin/nvidia-smi").symlink_to("/opt/sgl-lab/bin/nvidia-smi")
    if hv.get("lab_fabric_manager"):
        unit = tmp / "etc/systemd/system/nvidia-fabricmanager.service"
        unit.write_text(
            "[Unit]\nDescription=LAB stand-in for NVIDIA Fabric Manager (sgl-lab, not NVIDIA's)\n\n"
            "[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n"
        )
        (tmp / "etc/systemd/system/multi-user.target.wants/nvidia-fabricmanager.service").symlink_to(
            "/etc/systemd/system/nvidia-fabricmanager.service")
    tmp.rename(root)
    return root


def boot(name: str, hv: dict) -> None:
    root = prepare_root(name, hv)
    hd = host_dir(name)
    cmd = [
        "systemd-nspawn", "-q", "-D", str(root), "--boot", "--register=no", "--keep-unit",
        f"--machine=sgl-{name}", f"--hostname={name}", f"--network-bridge={BRIDGE}",
        "--resolv-conf=copy-host", "--timezone=off",
        f"--bind={UV_CACHE}", f"--bind-ro={REPO / 'lab'}:/opt/sgl-lab",
        f"--bind-ro={REPO / 'tests/fixtures/gpu'}:/opt/sgl-lab-fixtures/gpu",
    ]
    if hv.get("lab_models_tmpfs_mb"):
        cmd.append(f"--tmpfs=/srv/models:mode=0755,size={int(hv['lab_models_tmpfs_mb'])}m")
    logf = open(hd / "console.log", "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (hd / "nspawn.pid").write_text(str(proc.pid))
    log(f"{name}: booting (nspawn pid {proc.pid}, {hv['ansible_host']}, profile {hv['lab_gpu_profile']})")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_ready(name: str, hv: dict, timeout: float = 120) -> None:
    addr = hv["ansible_host"]
    pid = int((host_dir(name) / "nspawn.pid").read_text())
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(pid):
            tail = (host_dir(name) / "console.log").read_text(errors="replace")[-2000:]
            sys.exit(f"labctl: {name}: systemd-nspawn exited during boot:\n{tail}")
        if port_open(addr, 22):
            r = run(ssh_cmd(addr, "systemctl is-system-running --wait"), check=False, capture_output=True)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                log(f"{name}: up, systemd {state}")
                return
        time.sleep(1)
    sys.exit(f"labctl: {name}: not reachable over SSH at {addr} within {timeout:.0f}s")


def stop(name: str) -> None:
    pid = pid_of(name)
    if pid:
        os.kill(pid, signal.SIGTERM)  # nspawn asks the container's systemd to power off
        for _ in range(60):
            if pid_of(name) is None:
                break
            time.sleep(0.5)
        else:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(1)
    shutil.rmtree(host_dir(name), ignore_errors=True)
    log(f"{name}: removed")


def all_known_hosts() -> list[str]:
    d = STATE / "hosts"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- hub

HUB_DIR = STATE / "hub"
HUB_PORT = int(os.environ.get("SGL_LAB_HUB_PORT", "18080"))


def sglang_python() -> str:
    """The python with `tokenizers` (the SGLang venv) to generate the model repos."""
    for cand in (os.environ.get("SGL_SGLANG_PYTHON"), REPO / ".venv-sglang/bin/python"):
        if cand and Path(cand).exists():
            return str(cand)
    sys.exit("labctl: no SGLang venv to generate the lab model repos (make setup)")


def hub_up() -> None:
    pidfile = HUB_DIR / "hub.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        if port_open(BRIDGE_ADDR.split("/")[0], HUB_PORT):
            log(f"hub: already running (pid {pid})")
            return
    except (OSError, ValueError):
        pass
    HUB_DIR.mkdir(parents=True, exist_ok=True)
    root = HUB_DIR / "repos"
    if not (root / "SglLab/MiniMax-M3-Lab/config.json").exists():
        log("hub: generating the lab model repos")
        run([sglang_python(), str(REPO / "lab/hub/make_repo.py"), "--root", str(root), "--model", "all"],
            stdout=subprocess.DEVNULL)
    logf = open(HUB_DIR / "hub.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "lab/hub/server.py"), "--root", str(root), "--host", BRIDGE_ADDR.split("/")[0],
         "--port", str(HUB_PORT), "--access-log", str(HUB_DIR / "access.log")],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    for _ in range(50):
        if port_open(BRIDGE_ADDR.split("/")[0], HUB_PORT):
            log(f"hub: serving on http://{BRIDGE_ADDR.split('/')[0]}:{HUB_PORT} (pid {proc.pid})")
            return
        time.sleep(0.2)
    sys.exit(f"labctl: hub did not start, see {HUB_DIR / 'hub.log'}")


def hub_down() -> None:
    pidfile = HUB_DIR / "hub.pid"
    try:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        log("hub: stopped")
    except (OSError, ValueError):
        pass
    pidfile.unlink(missing_ok=True)


# ---------------------------------------------------------------- commands


def cmd_up(args) -> None:
    hosts = load_hosts(args.inventory, args.hosts)
    build_base()
    ensure_key()
    ensure_tls(hosts)
    ensure_network()
    for name, hv in hosts.items():
        if pid_of(name):
            log(f"{name}: already running")
            continue
        boot(name, hv)
    for name, hv in hosts.items():
        wait_ready(name, hv)
    if not args.no_hub:
        hub_up()


def cmd_down(args) -> None:
    names = all_known_hosts() if args.all else list(load_hosts(args.inventory, args.hosts))
    for name in names:
        stop(name)
    if args.all:
        hub_down()
    if not all_known_hosts():
        hub_down()
        drop_network()


def cmd_reset(args) -> None:
    hosts = load_hosts(args.inventory, args.hosts)
    for name in hosts:
        stop(name)
    cmd_up(args)


def restart(name: str, hv: dict) -> None:
    """Power the host off (nspawn asks its systemd, as a reboot would) and boot the same root again:
    installed software, units and /var/lib survive; /run and every process do not."""
    pid = pid_of(name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            if pid_of(name) is None:
                break
            time.sleep(0.5)
        else:
            os.killpg(pid, signal.SIGKILL)
            time.sleep(1)
        log(f"{name}: powered off")
    boot(name, hv)
    wait_ready(name, hv)


def cmd_restart(args) -> None:
    for name, hv in load_hosts(args.inventory, args.hosts).items():
        restart(name, hv)


def cmd_status(args) -> None:
    hosts = load_hosts(args.inventory, args.hosts)
    for name, hv in hosts.items():
        pid = pid_of(name)
        state = "down"
        if pid:
            r = run(ssh_cmd(hv["ansible_host"], "systemctl is-system-running"), check=False, capture_output=True)
            state = r.stdout.strip() or "booting"
        print(f"{name:12} {hv['ansible_host']:15} {hv['lab_gpu_profile']:28} {state}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "status", "reset", "restart", "base", "hub-up", "hub-down"])
    p.add_argument("-i", "--inventory", type=Path, default=REPO / "inventory/lab/hosts.yml")
    p.add_argument("--hosts", type=lambda s: [h for h in s.split(",") if h], default=None)
    p.add_argument("--all", action="store_true", help="down: every lab host, whatever the inventory, and the hub")
    p.add_argument("--no-hub", action="store_true", help="up: do not start the hub")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("labctl: needs root (systemd-nspawn, bridge)")
    # One labctl at a time on this machine: lab tests run side by side (make test runs independent
    # lab modules in parallel), and an `up` that shares the bridge, the base root, the CA and the hub
    # must not race a `down` of another inventory that would drop them.
    STATE.mkdir(parents=True, exist_ok=True)
    lock = open(STATE / "labctl.lock", "w")  # noqa: SIM115 (held until exit)
    if args.command != "status":
        fcntl.flock(lock, fcntl.LOCK_EX)
    {"up": cmd_up, "down": cmd_down, "status": cmd_status, "reset": cmd_reset, "restart": cmd_restart,
     "base": lambda a: build_base(), "hub-up": lambda a: (ensure_network(), hub_up()),
     "hub-down": lambda a: hub_down()}[args.command](args)


if __name__ == "__main__":
    main()
