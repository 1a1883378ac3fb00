#!/usr/bin/env bash
# A CPU stand-in for the pinned CUDA base, for machines that reach no container registry:
# Debian 12 (debootstrap minbase from Debian's archive) + python3 (3.11) in a venv at
# /opt/venv + torch 2.13.0 CPU, the version the real base ships. It also trusts the host's
# CA bundle, so that pip inside builds can pass a TLS-intercepting proxy that only the host
# trusts; that is why it is a stand-in only: the real image (pinned base) never gets it.
#   image/standin_base.sh [--force]    → $STANDIN_TAG (skipped when it exists, unless --force)
# Needs root (debootstrap, chroot). The torch wheel and its dependencies come from the host's
# pip configuration (`pip download torch==2.13.0`; on this machine kind a local wheel).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/engine.sh"
PYTHON="${PYTHON:-python3.11}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if [[ "${1:-}" != --force ]] && "${ENGINE[@]}" image inspect "$STANDIN_TAG" >/dev/null 2>&1; then
  echo "stand-in base $STANDIN_TAG exists (image/standin_base.sh --force rebuilds it)"
  exit 0
fi
[[ $(id -u) == 0 ]] || { echo "image/standin_base.sh needs root (debootstrap and chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "need debootstrap (apt-get install debootstrap)" >&2; exit 1; }
[[ -r "$CA_BUNDLE" ]] || { echo "no CA bundle at $CA_BUNDLE (set HOST_CA_BUNDLE)" >&2; exit 1; }

start=$SECONDS
rootfs="$(mktemp -d /var/tmp/maerak-standin.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm (minbase + python3) into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log"; echo "debootstrap failed (log: $rootfs.log)" >&2; exit 1; }
rm -f "$rootfs.log"

echo "torch 2.13.0 and its dependencies, downloaded by the host's pip"
"$PYTHON" -m pip download --quiet --only-binary=:all: torch==2.13.0 -d "$rootfs/tmp/wheels" 2> >(grep -v "^WARNING: Location" >&2)
install -D -m 644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# A clean environment: the host's PIP_* settings (find-links, certificates) mean nothing inside.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$rootfs" /bin/bash -euo pipefail -c '
  python3 -m venv /opt/venv
  /opt/venv/bin/pip install --quiet --no-index --find-links /tmp/wheels torch==2.13.0
  /opt/venv/bin/python -W ignore -c "import sys, torch; assert torch.__version__.split(\"+\")[0] == \"2.13.0\"; print(\"stand-in:\", sys.version.split()[0], \"torch\", torch.__version__)"
  rm -rf /tmp/wheels /root/.cache
  find /opt/venv -name __pycache__ -prune -exec rm -rf {} +
  apt-get clean && rm -rf /var/lib/apt/lists/*'

quiet=(); [[ "$MAERAK_ENGINE" == podman ]] && quiet=(--quiet)
tar -C "$rootfs" --numeric-owner -c . | "${ENGINE[@]}" import "${quiet[@]}" \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'LABEL maerak.stand-in="Debian 12 minbase + python3 venv + torch 2.13.0 CPU + the host CA bundle; image/standin_base.sh"' \
  --change 'CMD ["/bin/bash"]' \
  - "$STANDIN_TAG" >/dev/null
echo "stand-in base $STANDIN_TAG: $("${ENGINE[@]}" image inspect --format '{{.Size}}' "$STANDIN_TAG" | awk '{printf "%.2f GB", $1/1e9}') in $((SECONDS - start)) s"
