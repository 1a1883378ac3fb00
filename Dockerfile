# maerak: NIKL 2024 대화 맥락 추론 (나 유형) — reproducible GPU image.
#
# Base image: the official PyTorch image with torch 2.13.0 (CUDA 12.6, cuDNN 9),
# the torch version requirements.lock was resolved against (torch is kept out
# of the lock so that the image uses the CUDA build of its base).
#   tag:    pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
#   digest: sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4
# Source of the digest: not pulled from a registry here (no Docker engine and no
# registry access on the development machines). It is the digest two unrelated
# public repositories pin for this same tag (a lock script that resolves its
# lock inside the image, and a test asserting torch.__version__ ==
# "2.13.0+cu126" in an image built from it). Confirm it before a release with
#   docker buildx imagetools inspect pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
# A wrong or withdrawn digest makes `docker build` fail at FROM; it cannot
# silently give a different base.
#
# Python: this base ships Python 3.12 (system interpreter, PEP 668), not the
# 3.11 of the development .venv. No official image with torch 2.13.0 and
# Python 3.11 was found. Every line of requirements.lock resolves for cp312
# manylinux x86_64 (checked with `pip install --dry-run --python-version 3.12
# --platform manylinux... -r requirements.lock`: 257 of 257, the 7 sdists are
# pure Python; deepspeed's 4 new dependencies have cp312/py3 wheels, and
# deepspeed itself is an sdist that builds without torch when DS_BUILD_OPS=0).
#
# Flash attention: the runtime base has no flash-attn package and no nvcc to
# build one, so the competition configs use eager attention (Gemma-2's logit
# softcapping; Axolotl isolates packed samples with a block-diagonal mask).
# Scoring does the same for soft-capped models and uses SDPA (FlashAttention-2
# kernels on sm80+) otherwise.
#
# Secrets: none at build time. Pass HF_TOKEN at run time (`docker run -e HF_TOKEN`)
# and only for the competition profile (gated google/gemma-2-9b-it).
#
# BASE: the one line that differs between builds. Users build on the pinned CUDA
# base (the default); `make image-test` on a machine that cannot pull it builds
# on a CPU stand-in (image/standin_base.sh: Debian 12 + torch 2.13.0 CPU) with
# --build-arg BASE=... — the same file, nothing else changed.
ARG BASE=docker.io/pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime@sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4
FROM ${BASE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    HF_HOME=/cache/huggingface
# (run.sh sets AXOLOTL_DO_NOT_TRACK and the tokenizers' parallelism itself.)

WORKDIR /workspace

# Dependencies first (their layer is reused while only code changes).
# --no-deps: the lock is a complete freeze, so exactly its pinned lines are
# installed on top of the base; nothing unpinned is resolved. torch is the base's.
COPY requirements.lock /workspace/requirements.lock
# deepspeed ships only an sdist: DS_BUILD_OPS=0 builds it as pure Python (its CUDA ops
# compile at first use), without torch in pip's build environment.
RUN DS_BUILD_OPS=0 python3 -m pip install --no-cache-dir --no-deps -r /workspace/requirements.lock \
    && python3 -c "import sys, torch; v = torch.__version__.split('+')[0]; assert v == '2.13.0', f'base torch {torch.__version__} != 2.13.0 (requirements.lock)'; print(sys.version, torch.__version__, torch.version.cuda)" \
    && python3 -c "import deepspeed; print('deepspeed', deepspeed.__version__)"

# The user the container runs as: UID/GID (default 1000) should be the host user
# who owns the bind-mounted data/, models/, outputs/. Declared after the
# dependency layer so that other values do not reinstall the lock. A UID or GID
# the base already has (Ubuntu's `ubuntu` is 1000; root is 0) is used as it is:
# only a missing group or user is created, and ownership is numeric throughout.
ARG UID=1000
ARG GID=1000
RUN if ! getent group "${GID}" >/dev/null; then groupadd --gid "${GID}" maerak; fi \
    && if ! getent passwd "${UID}" >/dev/null; then useradd --uid "${UID}" --gid "${GID}" --create-home --shell /bin/bash maerak; fi \
    && mkdir -p /cache/huggingface /workspace/data /workspace/models /workspace/outputs \
    && chown -R "${UID}:${GID}" /cache /workspace \
    && echo "runs as $(getent passwd "${UID}" | cut -d: -f1) (${UID}:${GID}), home $(getent passwd "${UID}" | cut -d: -f6)"

# The project code (the repository root is /workspace, so profiles.yml's
# relative paths work). Licensed data, models and outputs are not in the
# image: .dockerignore keeps them out, the volumes below bring them in.
COPY --chown=${UID}:${GID} run.sh profiles.yml requirements.in Makefile /workspace/
COPY --chown=${UID}:${GID} maerak /workspace/maerak
COPY --chown=${UID}:${GID} pipeline /workspace/pipeline
COPY --chown=${UID}:${GID} preprocessing /workspace/preprocessing
COPY --chown=${UID}:${GID} training /workspace/training
COPY --chown=${UID}:${GID} inference /workspace/inference
COPY --chown=${UID}:${GID} axolotl_configs /workspace/axolotl_configs
COPY --chown=${UID}:${GID} data/sample /workspace/data/sample

# Recorded in manifests written inside the container (the image has no .git).
# Last, so that a new commit rebuilds only what follows the code copies.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="maerak" \
      org.opencontainers.image.description="NIKL 2024 대화 맥락 추론 (나 유형): Axolotl QLoRA + full fine-tune of gemma-2-9b-it, reproducible" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
ENV MAERAK_GIT_COMMIT=${GIT_COMMIT}

# Numeric, so that the host resolves it (files in the volumes are owned by UID:GID).
USER ${UID}:${GID}

# Smoke test: the entry point starts and lists its verbs.
RUN ./run.sh --help >/dev/null

VOLUME ["/workspace/data", "/workspace/models", "/workspace/outputs", "/cache/huggingface"]

ENTRYPOINT ["/workspace/run.sh"]
CMD ["--help"]
