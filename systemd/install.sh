#!/usr/bin/env bash
# Install factory-watcher as a system service (run as root from a checkout):
#   the application in $PREFIX/venv, the unit in $UNIT_DIR, a starter config in
#   $ETC/config.yaml (kept if present) and an empty $ETC/credentials/ (0700).
# Then put each secret in $ETC/credentials/<name> and enable the unit (see README).
#
# Paths can be moved for a dry run: PREFIX, ETC, UNIT_DIR, PYTHON; with
# --no-systemctl nothing is asked of a running systemd (tests use both).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/factory-watcher}
ETC=${ETC:-/etc/factory-watcher}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
# The service's ProtectHome= hides /root and /home: the venv's interpreter must
# live elsewhere, so a pyenv or user-installed Python will not do.
PYTHON=${PYTHON:-/usr/bin/python3}
systemctl_too=1
[ "${1:-}" = "--no-systemctl" ] && systemctl_too=0

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: $PYTHON is older than Python 3.11; set PYTHON=/path/to/python3.11" >&2
    exit 1
}

umask 022
"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --disable-pip-version-check "$src"
# DynamicUser= runs the service under a throwaway UID: it needs read access.
chmod -R a+rX "$PREFIX"

install -d -m 0755 "$ETC"
install -d -m 0700 "$ETC/credentials"
if [ ! -e "$ETC/config.yaml" ]; then
    install -m 0644 "$src/systemd/config.yaml" "$ETC/config.yaml"
fi
install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$src/systemd/factory-watcher.service" "$UNIT_DIR/factory-watcher.service"

if [ "$systemctl_too" = 1 ]; then
    systemctl daemon-reload
fi
echo "installed: $PREFIX/venv, $UNIT_DIR/factory-watcher.service, $ETC/config.yaml"
echo "next: write secrets to $ETC/credentials/, edit $ETC/config.yaml, then"
echo "      systemctl enable --now factory-watcher"
