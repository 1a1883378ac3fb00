#!/usr/bin/env bash
# `make image`: build the image with Docker (when its daemon answers) or Podman.
#   BASE=IMAGE      build on IMAGE instead of the Dockerfile's pinned CUDA base
#   STANDIN=auto    (default) when the pinned base can neither be found nor pulled, build on the
#                   CPU stand-in (image/standin_base.sh) and say so; STANDIN=0 fails instead
#   IMAGE=maerak    the tag
# UID/GID are the caller's (files the container writes in its volumes are theirs), GIT_COMMIT
# is HEAD. Prints the build time and the image size; removes the image this build replaced.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/engine.sh"
cd "$repo_root"
IMAGE="${IMAGE:-maerak}"
STANDIN="${STANDIN:-auto}"

if [[ -z "${BASE:-}" ]]; then
  BASE="$(pinned_base)"
  if ! "${ENGINE[@]}" image inspect "$BASE" >/dev/null 2>&1 && ! "${ENGINE[@]}" pull "$BASE" >/dev/null; then
    [[ "$STANDIN" != 0 ]] || { echo "cannot pull the pinned base $BASE (STANDIN=0)" >&2; exit 1; }
    echo "*** the pinned base cannot be pulled: building on the CPU stand-in $STANDIN_TAG (not the CUDA image) ***"
    "$image_dir/standin_base.sh"
    BASE="$STANDIN_TAG"
  fi
fi

commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  echo "note: uncommitted changes are built into the image; GIT_COMMIT=$commit names HEAD"
fi
old_id="$("${ENGINE[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
echo "${ENGINE[*]} build $IMAGE on $BASE (UID $(id -u), GID $(id -g), GIT_COMMIT $commit)"
start=$SECONDS
"${ENGINE[@]}" build "${BUILD_FLAGS[@]}" --build-arg BASE="$BASE" --build-arg GIT_COMMIT="$commit" \
  --build-arg UID="$(id -u)" --build-arg GID="$(id -g)" -t "$IMAGE" .
new_id="$("${ENGINE[@]}" image inspect --format '{{.Id}}' "$IMAGE")"
# The image this tag named before is now untagged: remove it (kept while a container uses it).
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then "${ENGINE[@]}" rmi "$old_id" >/dev/null 2>&1 || true; fi
size="$("${ENGINE[@]}" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
echo "built $IMAGE on $BASE in $((SECONDS - start)) s: $size"
