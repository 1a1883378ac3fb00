#!/usr/bin/env bash
# `make image-test`: build the image and use it as a user would, on scratch volumes.
#   1. a container engine: a running Docker daemon, else Podman (installed with runc and
#      debootstrap from Debian when missing; needs root and apt-get)
#   2. image/build.sh (the pinned base, or the CPU stand-in when it cannot be pulled)
#   3. the bare image prints the verbs; then `model`, `reproduce --profile sample` and `verify`
#      with data/, models/ and outputs/ as host volumes (a scratch directory)
#   4. the container's submission is byte-identical to a host `./run.sh submit` (the .venv)
#      from the same checkpoint: both sha256 are printed
#   5. every file in the volumes belongs to the host user (the image was built with its UID/GID)
# The scratch directory is removed on success and kept (its path printed) on failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
IMAGE="${IMAGE:-maerak}"
export IMAGE

if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; } \
   && ! { command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; }; then
  echo "== installing podman, runc and debootstrap (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
source "$here/engine.sh"
[[ -x .venv/bin/python ]] || { echo "no .venv: the host submit needs it (make setup)" >&2; exit 1; }

step() { echo; echo "== $*"; step_start=$SECONDS; }
took() { echo "   ($((SECONDS - step_start)) s)"; }

step "build ($MAERAK_ENGINE)"
"$here/build.sh"
took

scratch="$(mktemp -d /var/tmp/maerak-image-test.XXXXXX)"
trap 'echo "image-test failed; its volumes are kept in $scratch" >&2' ERR
mkdir -p "$scratch"/{data,models,outputs,host}
cp -r data/sample "$scratch/data/sample"
volumes=(-v "$scratch/data:/workspace/data" -v "$scratch/models:/workspace/models" -v "$scratch/outputs:/workspace/outputs")
in_container() { "${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" "${volumes[@]}" "$IMAGE" "$@"; }

step "the bare image prints the verbs"
help="$("${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" "$IMAGE")"
for verb in $(python3 -m pipeline.cli --names); do
  grep -qw -- "$verb" <<<"$help" || { echo "$help"; echo "verb $verb missing from the image's help" >&2; false; }
done
echo "   $(wc -w <<<"$(python3 -m pipeline.cli --names)") verbs listed"

step "model"; in_container model; took
step "reproduce --profile sample"; in_container reproduce --profile sample; took
step "verify"; in_container verify --profile sample; took

step "host submit from the container's checkpoint"
# The profile's final checkpoint (stage 3 with `preference: true`, else stage 2), asked of the profile.
final="$(.venv/bin/python -c 'from maerak.profiles import ROOT, get_profile; print(get_profile("sample").final_dir.relative_to(ROOT))')"
./run.sh submit --profile sample --model "$scratch/$final" \
  --output "$scratch/host/submission.json" --no-cache --quiet
took
container_sha="$(sha256sum <"$scratch/outputs/sample/submission.json" | cut -d' ' -f1)"
host_sha="$(sha256sum <"$scratch/host/submission.json" | cut -d' ' -f1)"
echo "   container submission.json sha256 $container_sha"
echo "   host      submission.json sha256 $host_sha"
[[ "$container_sha" == "$host_sha" ]] || { echo "the container's and the host's submissions differ" >&2; false; }

step "the volumes' files belong to the host user ($(id -u):$(id -g))"
foreign="$(find "$scratch"/{data,models,outputs} \( ! -uid "$(id -u)" -o ! -gid "$(id -g)" \) -print | head -5)"
[[ -z "$foreign" ]] || { echo "$foreign"; echo "files in the volumes not owned by $(id -u):$(id -g)" >&2; false; }
echo "   $(find "$scratch"/{data,models,outputs} | wc -l) files and directories, all $(id -u):$(id -g)"

rm -rf "$scratch"
echo; echo "image-test passed: $IMAGE ($MAERAK_ENGINE), submissions equal ($container_sha)"
