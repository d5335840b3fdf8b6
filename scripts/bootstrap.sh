#!/usr/bin/env bash
# Installs what netctl needs on Debian 12, as root. Idempotent and quiet: it prints only when it
# installs something. Safe to run before every test run or demo.
#   - apt packages (checked with dpkg-query first; `apt-get update` only if one is missing)
#   - .venv with netctl installed editable plus the test extras, redone when pyproject.toml changes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(iproute2 nftables iputils-ping containernetworking-plugins python3-venv util-linux procps tcpdump
              busybox-static podman runc iperf3 etcd-server etcd-client netavark aardvark-dns
              docker-registry skopeo openssl
              docker-compose)  # 1.29 on Debian's python3-docker; it RECOMMENDS docker.io (dockerd), never installed:
                               # every install below is --no-install-recommends, and the check after it refuses one
VENV=.venv
MARKER="$VENV/.netctl-installed"  # touched after a successful pip install

say() { echo "bootstrap: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    say "run me as root: sudo bash scripts/bootstrap.sh (netctl creates kernel objects)"
    exit 1
fi

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if is_installed docker.io; then  # its postinst starts dockerd, which the Docker API tests must never meet
    say "docker.io (dockerd) is installed: netctl serves the Docker API itself; apt-get purge docker.io"
    exit 1
fi

# The first python3 on PATH if it is recent enough, else Debian 12's own.
pick_python() {
    local candidate
    for candidate in "$(command -v python3 || true)" /usr/bin/python3; do
        [[ -n $candidate && -x $candidate ]] || continue
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    say "no python3 >= 3.11 with the venv module found (apt-get install python3-venv)"
    exit 1
}

if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV"
    "$(pick_python)" -m venv "$VENV"
fi
if [[ ! -e $MARKER || pyproject.toml -nt $MARKER ]]; then
    say "installing netctl and its test dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
    touch "$MARKER"
fi
# Byte-compile netctl's own code: where PYTHONDONTWRITEBYTECODE is set, every CLI or CNI call would
# otherwise recompile its modules from source (~10 ms each for the larger ones). Cheap when up to date.
"$VENV/bin/python" -m compileall -q -j 0 libnetwork drivers netctl cni_plugins runner >/dev/null
# The `netctl` command as a fast launcher (like the CNI plugins' of cni_plugins/install.py): Python with
# -I -S (no site: no .pth files, no dist-packages; 1.4-1.9 ms of a ~12-15 ms agent-served command) and
# sys.path set explicitly: netctl's code first, the venv's site-packages last (click, yaml, etcd3gw for
# a command that runs in-process). The interpreter is the venv's own, or the distribution's
# /usr/bin/python3 (statically linked: ~0.5 ms faster to start than a --enable-shared build such as
# pyenv's) only when it is exactly the same Python version: the in-process fallback runs all of netctl
# on that standard library, and patch releases differ (3.11.2 has no TarInfo.replace, which image import
# uses). Processes netctl starts (the agent on first use, the monitor, lab daemons) use sys.executable,
# set to the venv's interpreter. Measured: bench/profile_cli.py (pip's launcher beside this one).
# pip's own copy of bin/netctl (#! the venv's python, with site) is replaced after every install; the
# file is rewritten only when it differs.
"$VENV/bin/python" - "$VENV/bin/netctl" <<'PY'
import os, subprocess, sys, sysconfig
sys.path.insert(0, os.getcwd())
from cni_plugins.install import package_dir

target, python = sys.argv[1], sys.executable
system = "/usr/bin/python3"
if os.access(system, os.X_OK):
    probe = subprocess.run([system, "-I", "-S", "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode == 0 and probe.stdout.strip() == sys.version:
        python = system
site = list(dict.fromkeys((sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])))
text = (f"#!{python} -IS\n"
        '"""netctl: see netctl/entry.py. Written by scripts/bootstrap.sh (a fast start: -I -S, sys.path explicit)."""\n'
        f"import sys; sys.path[:0] = [{package_dir()!r}]; sys.path += {site!r}; sys.executable = {sys.executable!r}\n"
        "from netctl.entry import main; main()\n")
try:
    with open(target) as f:
        unchanged = f.read() == text
except OSError:
    unchanged = False
if not unchanged:
    temporary = f"{target}.tmp-{os.getpid()}"
    with open(temporary, "w") as f:
        f.write(text)
    os.chmod(temporary, 0o755)
    os.replace(temporary, target)
PY
