# Sourced by image/*.sh: which container engine to use and how to call it.
# Docker when its daemon answers (a docker client alone is not enough), else Podman with
# what this machine kind needs (measured, see image/README.md): runc instead of crun
# ("cgroups in hybrid mode not supported"), no default ulimits (image/containers.conf),
# host networking for build and run, and --format docker (OCI images drop SHELL).
# MAERAK_ENGINE=docker|podman chooses explicitly.

image_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(dirname "$image_dir")"

if [[ -z "${MAERAK_ENGINE:-}" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then MAERAK_ENGINE=docker
  elif command -v podman >/dev/null; then MAERAK_ENGINE=podman
  else
    echo "no container engine: neither a running Docker daemon nor podman (make image-test installs podman)" >&2
    exit 1
  fi
fi

if [[ "$MAERAK_ENGINE" == podman ]]; then
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$image_dir/containers.conf}"
  ENGINE=(podman)
  if command -v runc >/dev/null; then ENGINE+=(--runtime runc); fi
  BUILD_FLAGS=(--format docker --network=host)
  RUN_FLAGS=(--network=host)
else
  ENGINE=(docker)
  BUILD_FLAGS=()
  RUN_FLAGS=()
fi

# The pinned base: the default of `ARG BASE=` in the Dockerfile (its one source of truth).
pinned_base() { sed -n 's/^ARG BASE=//p' "$repo_root/Dockerfile"; }

STANDIN_TAG="${MAERAK_STANDIN_TAG:-localhost/maerak-standin:bookworm-torch2.13.0}"
