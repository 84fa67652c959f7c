#!/usr/bin/env bash
# Idempotent controller setup: system packages, uv, the controller venv (.venv) and the
# SGLang venv used by controller-side tests (.venv-sglang, shares the lab's uv cache).
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: for promtool only (make test checks and unit-tests the alert rules); no daemon on the controller.
APT_PACKAGES=(debootstrap systemd-container iproute2 iptables openssh-client rsync make git curl ca-certificates python3 python3-venv prometheus)
SGLANG_VERSION="${SGLANG_VERSION:-0.5.23}"
PY="${SGL_CONTROLLER_PYTHON:-$(command -v python3.11 || command -v python3)}"
export UV_CACHE_DIR="${UV_CACHE_DIR:-/var/cache/sgl-lab/uv}"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The prometheus package enables (and may start) its daemon: the controller needs only promtool.
if [[ "$(systemctl is-enabled prometheus.service 2>/dev/null)" != masked ]]; then
  systemctl stop prometheus.service >/dev/null 2>&1 || true
  systemctl disable prometheus.service >/dev/null 2>&1 || true
  systemctl mask prometheus.service >/dev/null 2>&1 || true
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  "$PY" -m pip install -q uv
fi
mkdir -p "$UV_CACHE_DIR"

if [[ ! -x .venv/bin/python ]]; then
  uv venv -q .venv --python "$PY"
fi
uv pip install -q --python .venv/bin/python -r requirements/controller.txt -e .

# The real SGLang, for controller-side tests (argv checks, lab engine unit tests).
# Symlinked from the shared uv cache: costs ~350 MB, not 9.5 GB.
if ! .venv-sglang/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('sglang') != '$SGLANG_VERSION')" 2>/dev/null; then
  echo "setup: installing sglang==$SGLANG_VERSION into .venv-sglang (first time: downloads ~3 GB)"
  uv venv -q --allow-existing .venv-sglang --python "$PY"
  UV_LINK_MODE=symlink uv pip install -q --python .venv-sglang/bin/python \
    "sglang==$SGLANG_VERSION" modelscope==1.40.2 modelscope-hub==0.5.1
fi
echo "setup: ok ($(.venv/bin/ansible --version | head -1), sglang $SGLANG_VERSION)"
