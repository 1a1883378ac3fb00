"""The ORPO stage (stage 3, `preference: true`): its pairs come from the one renderer through the
mode object, the trainer trains exactly the tokens submit scores, its loss is TRL's ORPO formula on
completion-only logits, and a tiny model learns the learning canary's planted rule through
prepare → Axolotl `rl: orpo` → submit, the gold option's margin over the wrong ones growing."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from maerak import modes
from maerak.modes import LETTERS_MODE, OPTIONS_MODE, mode_named, order_tag
from maerak.profiles import ROOT, Profile
from maerak.prompt import (
    CYCLIC_ORDERS,
    IDENTITY,
    LETTERS,
    answer_letter,
    preference_ids,
    render_context,
    render_prompt,
    response_ids,
)
from maerak.schema import load_items
from tests.conftest import write_stage_configs
from tests.test_canary import LABELS, moved_labels, planted_items


def test_letters_pairs_are_the_lettered_prompt_in_each_order_with_the_gold_letter_chosen(sample_dir):
    items = load_items(sample_dir / "train.json")[0][:5]
    rows = LETTERS_MODE.preference_rows(items, "cyclic")
    assert len(rows) == len(items) * len(CYCLIC_ORDERS) * 2  # two pairs per item and order
    for it in items:
        for order in CYCLIC_ORDERS:
            mine = [r.row for r in rows if r.id == it.id and r.tag.startswith(order_tag(order) + " ")]
            gold = answer_letter(it, order)
            assert len(mine) == 2
            assert all(r["prompt"] == render_prompt(it, order) and r["chosen"] == gold for r in mine)
            assert sorted(r["rejected"] for r in mine) == sorted(set(LETTERS) - {gold})


def test_options_pairs_are_the_option_free_context_with_the_gold_text_chosen(sample_dir):
    items = load_items(sample_dir / "train.json")[0][:5]
    rows = OPTIONS_MODE.preference_rows(items, "cyclic")  # no options shown: orders add nothing
    assert len(rows) == 2 * len(items)
    for it in items:
        mine = [r.row for r in rows if r.id == it.id]
        gold = it.options[it.label_index]
        assert all(r["prompt"] == render_context(it) and r["chosen"] == gold for r in mine)
        assert sorted(r["rejected"] for r in mine) == sorted(o for i, o in enumerate(it.options) if i != it.label_index)


@pytest.mark.parametrize("mode", ["letters", "options"])
def test_the_pair_tokens_are_the_tokens_submit_scores(sample_dir, tiny_model_dir, mode):
    """Prompt ids = the scorer's context ids (BOS first); each answer starts with the scorer's
    continuation ids (all of them, then EOS, in options mode; the letter's one token in letters mode)."""
    from transformers import AutoTokenizer

    from inference.tokens import encode_request

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    m = mode_named(mode)
    for item in load_items(sample_dir / "train.json")[0][:4]:
        for order in m.orders_for_training("cyclic"):
            req = m.request(item, order)
            enc, cut = encode_request(tokenizer, req, 4096)
            assert not cut
            rows = [r.row for r in m.preference_rows([item], "cyclic") if r.tag.startswith(order_tag(order) + " ")]
            for row in rows:
                ids = preference_ids(tokenizer, row["prompt"], row["chosen"], row["rejected"])
                assert ids["prompt_input_ids"] == list(enc.context) and enc.context[0] == tokenizer.bos_token_id
                for key in ("chosen", "rejected"):
                    k = req.continuations.index(row[key])
                    answer = ids[f"{key}_input_ids"][len(enc.context):]
                    assert ids[f"{key}_input_ids"][: len(enc.context)] == list(enc.context)
                    assert answer[: len(enc.continuations[k])] == list(enc.continuations[k])
                    assert answer[-1] == tokenizer.eos_token_id
                    if mode == "options":
                        assert answer == [*enc.continuations[k], tokenizer.eos_token_id]
                    labels = ids[f"{key}_labels"]
                    assert labels[: len(enc.context)] == [-100] * len(enc.context) and labels[len(enc.context):] == answer


def pair_batch(tokenizer, rows):
    """TRL's padded, concatenated batch of `preference_ids` rows (chosen rows, then rejected)."""
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer
    from trl.experimental.utils import DPODataCollatorWithPadding

    batch = DPODataCollatorWithPadding(pad_token_id=tokenizer.pad_token_id)(
        [preference_ids(tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in rows])
    return ORPOTrainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=tokenizer.pad_token_id,
                                           device="cpu")


def without_eos(labels: torch.Tensor) -> torch.Tensor:
    """`labels` with each row's last trained token (the EOS `preference_ids` appends) untrained."""
    out = labels.clone()
    for row in out:
        row[(row != -100).nonzero().max()] = -100
    return out


def test_completion_only_forward_and_loss_match_trl_on_every_position(sample_dir, tiny_model_dir):
    """`pair_forward` (logits only at completion positions) gives TRL's per-row log-probabilities of
    the answers without EOS (`get_batch_logps`, summed: what submit scores), the chosen completions'
    NLL, and, through `orpo_loss`, TRL's odds-ratio term and the gradients of the same loss computed
    from every position's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    from training.orpo_trainer import orpo_loss, pair_forward

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = OPTIONS_MODE.preference_rows(load_items(sample_dir / "train.json")[0][:2])  # 4 pairs, unequal lengths
    cat = pair_batch(tokenizer, [r.row for r in rows])
    n = len(rows)

    per_row, _, nll, _ = pair_forward(model, cat, n)
    loss = orpo_loss(per_row[:n], per_row[n:], nll, 0.1)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    logits = model(cat["concatenated_input_ids"], attention_mask=cat["concatenated_attention_mask"], use_cache=False).logits
    ref_rows = ORPOTrainer.get_batch_logps(logits, without_eos(cat["concatenated_labels"]), average_log_prob=False)
    labels = cat["concatenated_labels"][:n, 1:]
    ref_nll = torch.nn.functional.cross_entropy(logits[:n, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)
    fake = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device=torch.device("cpu")))
    ratio_terms = ORPOTrainer.odds_ratio_loss(fake, ref_rows[:n], ref_rows[n:])[0]
    ref_loss = ref_nll - ratio_terms.mean()  # TRL's get_batch_loss_metrics, with the NLL on the completions
    assert torch.allclose(per_row, ref_rows, rtol=1e-5, atol=1e-6)
    assert torch.allclose(nll, ref_nll, rtol=1e-5)
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    ref_loss.backward()
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["letters", "options"])
def test_the_odds_are_of_the_log_likelihood_submit_scores(sample_dir, tiny_model_dir, mode):
    """Each pair's chosen and rejected log p in the ORPO term is the scorer's log-likelihood of that
    continuation (letters: the letter's one token; options: the option's tokens, no EOS)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.scoring import Scorer
    from training.orpo_trainer import pair_forward

    m = mode_named(mode)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    items = load_items(sample_dir / "train.json")[0][:2]
    rows = [r.row for r in m.preference_rows(items, "cyclic")]
    cat = pair_batch(tokenizer, rows)
    with torch.no_grad():
        per_row = pair_forward(model, cat, len(rows))[0].tolist()
    scorer = Scorer(tiny_model_dir)
    reqs = m.requests(items, m.orders_for_training("cyclic"))
    lls = dict(zip(((r.context, c) for r in reqs for c in r.continuations),
                   (x for row in scorer.score(reqs) for x in row)))
    scored = [lls[(r["prompt"], r[key])] for key in ("chosen", "rejected") for r in rows]
    assert per_row == pytest.approx(scored, rel=1e-4, abs=1e-4)
    if mode == "letters":  # the letter is one token, so "the answer without EOS" is the scored letter
        assert all(len(m.continuation_ids(tokenizer, t)) == 1 == len(response_ids(tokenizer, t)) for t in LETTERS)


def saturating(model, cat: dict[str, torch.Tensor], lead: float = 60.0):
    """A forward hook on the LM head adding `lead` to the logit of the first row's (the chosen
    answer's) next token at each completion position `pair_forward` keeps: the model predicts every
    chosen token with float32 log p == 0.0 exactly, as a model trained to saturation does."""
    targets = torch.nn.functional.pad(cat["concatenated_labels"], (0, 1), value=-100)[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().flatten()
    bias = torch.zeros(len(keep), model.config.vocab_size)
    for j, t in enumerate(targets[0, keep].tolist()):
        if t != -100:
            bias[j, t] = lead
    return model.get_output_embeddings().register_forward_hook(lambda mod, args, out: out + bias)


@pytest.mark.parametrize("mode", ["letters", "options"])
def test_a_saturated_orpo_step_has_a_finite_loss_and_finite_gradients(sample_dir, tiny_model_dir, mode):
    """Chosen answers at log p == 0.0: TRL's log1mexp gives -inf and NaN gradients there (checked,
    so this test can fail); the trainer's loss, through its own `odds_ratio_loss`, stays finite, and
    so does every gradient."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    from training.orpo_trainer import AnswerORPOTrainer, pair_forward

    m = mode_named(mode)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rows = [r.row for r in m.preference_rows(load_items(sample_dir / "train.json")[0][:1])]
    rows = [r for r in rows if r["chosen"] == rows[0]["chosen"]]  # one chosen answer to saturate
    cat = pair_batch(tokenizer, rows)
    n = len(rows)
    hook = saturating(model, cat)
    fake = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device=torch.device("cpu")))

    def step(odds_ratio_loss):
        model.zero_grad()
        per_row, _, nll, _ = pair_forward(model, cat, n)
        losses = odds_ratio_loss(fake, per_row[:n], per_row[n:])[0]
        loss = nll - losses.mean()  # TRL's get_batch_loss_metrics
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return per_row, loss, grads

    per_row, loss, grads = step(ORPOTrainer.odds_ratio_loss)
    assert (per_row[:n] == 0.0).all() and (per_row[n:] < -10).all()  # saturated
    assert not (torch.isfinite(loss) and torch.isfinite(grads).all())  # TRL's term: -inf / NaN
    per_row, loss, grads = step(AnswerORPOTrainer.odds_ratio_loss)
    assert torch.isfinite(loss) and torch.isfinite(grads).all() and grads.abs().sum() > 0
    hook.remove()


# ------------------------------------------------------------------ the learning canary, ORPO form
# Measured in-process on the 6 planted items (options mode: 12 pairs, 3 pairs a step): all 6 right, and the
# gold margin up, at this budget; the labels moved off the rule do not reach 6/6.
ORPO_TRAINING = {"max_steps": 60, "micro_batch_size": 4, "learning_rate": 1.0e-3, "lr_scheduler": "constant",
                 "sequence_len": 1024, "save_steps": 100_000}


def margins(probs_file: Path, truth: list[dict]) -> list[float]:
    """Per item: log p(gold option) - log p(best wrong option), from submit's probabilities file."""
    gold = {t["id"]: LABELS.index(t["output"]) for t in truth}
    out = []
    for row in json.loads(probs_file.read_text(encoding="utf-8"))["items"]:
        p, g = row["probs"], gold[row["id"]]
        out.append(math.log(max(p[g], 1e-12)) - math.log(max(max(x for i, x in enumerate(p) if i != g), 1e-12)))
    return out


def orpo_train_and_score(root: Path, model_dir: Path, sample_dir: Path, train_items: list[dict], truth: list[dict],
                         mode: str = "options") -> tuple[float, list[float], list[float], Profile]:
    """prepare (preference: true) → Axolotl stage 3 (the sample ORPO YAML + ORPO_TRAINING) from `model_dir`
    as stage 2's model → submit on `truth`: accuracy, the margins before and after, and the profile."""
    from inference.submit import main as submit_main
    from preprocessing import config, prepare
    from training import axolotl_run as ar

    data = root / "data"
    data.mkdir(parents=True)
    (data / "train.json").write_text(json.dumps(train_items, ensure_ascii=False), encoding="utf-8")
    for split in ("dev", "test"):
        shutil.copy(sample_dir / f"{split}.json", data / f"{split}.json")
    stage = {n: yaml.safe_load((ROOT / "axolotl_configs" / "sample" / name).read_text(encoding="utf-8"))
             for n, name in ((1, "stage1_qlora.yml"), (2, "stage2_full.yml"), (3, "stage3_orpo.yml"))}
    profile = Profile(name="canary", root=root, settings={
        "data_dir": "data", "axolotl_configs": "axolotl_configs", "offline": True, "preference": True,
        "sources": str(ROOT / "preprocessing" / "sources.yml"), "scoring": {"mode": mode}})
    write_stage_configs(profile, {**stage[1], "seed": 0}, {**stage[2], "seed": 0}, base_model="model",
                        stage3={**stage[3], "seed": 0, **ORPO_TRAINING})
    prepare.run(profile, config.load_config(profile), progress=False)
    pairs = [json.loads(line) for line in profile.stage_data(3).read_text(encoding="utf-8").splitlines()]
    # two pairs per item, less any whose wrong option reads like the gold one (moved labels: "아닙니다" twice)
    distinct = sum(t["input"][k] != t["input"][t["output"]] for t in train_items for k in LABELS if k != t["output"])
    assert len(pairs) == distinct * (3 if mode == "letters" else 1)
    assert all(p["chosen"] != p["rejected"] for p in pairs)

    scored = root / "scored.json"
    scored.write_text(json.dumps(truth, ensure_ascii=False), encoding="utf-8")

    def score(model: Path, name: str) -> tuple[float, list[float]]:
        out = root / f"{name}.json"
        assert submit_main(["--profile", "sample", "--model", str(model), "--input", str(scored), "--output", str(out),
                            "--mode", mode, "--no-cache", "--quiet"]) == 0
        answers = [it["output"] for it in json.loads(out.read_text(encoding="utf-8"))]
        return sum(a == t["output"] for a, t in zip(answers, truth)) / len(truth), margins(root / f"{name}.probs.json", truth)

    _, before = score(model_dir, "before")
    shutil.copytree(model_dir, profile.stage2_dir)  # stage 3 starts from "stage 2" (a copy: outputs stay under out/)
    out = ar.train(profile, 3)
    assert out == profile.final_dir and modes.read_record(out) is modes.mode_named(mode)
    accuracy, after = score(out, "after")
    return accuracy, before, after, profile


def test_tiny_model_learns_the_planted_rule_through_orpo(tmp_path, tiny_model_dir, sample_dir):
    items = planted_items(sample_dir)
    accuracy, before, after, profile = orpo_train_and_score(tmp_path, tiny_model_dir, sample_dir, items, items)
    assert accuracy == 1.0
    assert sum(after) / len(after) > sum(before) / len(before) + 1.0  # the gold option pulled clear of the wrong ones
    assert min(after) > 0

    # What Axolotl's ORPO loader handed the trainer is prepare's rows, unchanged (no `type`: no template applied).
    from datasets import load_from_disk

    # The launcher's content-keyed folder (training/axolotl_run.py dataset_cache) holds Axolotl's own
    # prepared folder(s) and the datasets library's cache (`datasets/`).
    cache = profile.stage_paths(3).dataset_prepared_path
    saved = [load_from_disk(str(d)) for key in sorted(cache.iterdir()) if key.is_dir()
             for d in sorted(key.iterdir()) if d.is_dir() and d.name != "datasets"]
    assert saved, f"no prepared dataset under {cache}"
    written = [json.loads(line) for line in profile.stage_data(3).read_text(encoding="utf-8").splitlines()]
    key = ("prompt", "chosen", "rejected")
    assert sorted(tuple(r[k] for k in key) for r in saved[-1]) == sorted(tuple(r[k] for k in key) for r in written)


def test_the_orpo_canary_fails_when_the_labels_do_not_follow_the_rule(tmp_path, tiny_model_dir, sample_dir):
    items = planted_items(sample_dir)
    accuracy, *_ = orpo_train_and_score(tmp_path, tiny_model_dir, sample_dir, moved_labels(items), items)
    assert accuracy < 1.0


def test_preference_profile_plans_stage_3_and_submits_its_checkpoint():
    from pipeline.reproduce import plan

    for name in ("sample", "official-cpu", "competition"):
        profile = Profile(name=name, settings={**_profiles()[name], "preference": True})
        steps = [s.name for s in plan(profile)]
        assert steps.index("train-stage3") == steps.index("train-stage2") + 1
        assert profile.final_dir == profile.stage3_dir and profile.training_stages == (1, 2, 3)
        submit = next(s for s in plan(profile) if s.name == "submit")
        assert profile.stage3_dir in submit.inputs and profile.stage2_dir not in submit.inputs
        off = Profile(name=name, settings={**_profiles()[name], "preference": False})
        assert "train-stage3" not in [s.name for s in plan(off)]
        assert off.final_dir == off.stage2_dir and off.training_stages == (1, 2)


def _profiles() -> dict:
    from maerak.profiles import load_profiles

    return load_profiles()


def test_stage3_config_must_start_from_stage_2(tmp_path):
    from maerak.errors import ConfigError

    profile = Profile(name="p", root=tmp_path, settings={"data_dir": "data", "axolotl_configs": "cfg", "preference": True})
    stage = {n: yaml.safe_load((ROOT / "axolotl_configs" / "sample" / name).read_text(encoding="utf-8"))
             for n, name in ((1, "stage1_qlora.yml"), (2, "stage2_full.yml"), (3, "stage3_orpo.yml"))}
    write_stage_configs(profile, stage[1], stage[2], base_model="model", stage3=stage[3])
    assert profile.stage_paths(3).base_model == "outputs/p/stage2"
    path = profile.axolotl_config(3)
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump({**cfg, "base_model": "outputs/p/stage1/merged"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="stage3_orpo.yml: base_model: .*stage 2"):
        profile.stage_paths(3)


def test_identity_is_the_only_options_order():
    assert OPTIONS_MODE.orders_for_training("all") == (IDENTITY,)
    assert LETTERS_MODE.orders_for_training("cyclic") == CYCLIC_ORDERS


def test_prepare_checks_pairs_against_stage_3s_sequence_len(tmp_path, tiny_model_dir, sample_dir):
    """A pair's longer sequence (BOS + prompt + answer + EOS, as the trainer tokenizes it) over stage 3's
    sequence_len stops prepare, naming stage 3, before Axolotl's filter (two tokens shorter) could drop it."""
    from maerak.schema import DataError
    from preprocessing import config, prepare

    shutil.copytree(sample_dir, tmp_path / "data", ignore=shutil.ignore_patterns("README.md", "test_answers.json"))
    profile = Profile(name="p", root=tmp_path, settings={
        "data_dir": "data", "axolotl_configs": "cfg", "offline": True, "preference": True,
        "sources": str(ROOT / "preprocessing" / "sources.yml"), "scoring": {"mode": "options"}})
    stage = {n: yaml.safe_load((ROOT / "axolotl_configs" / "sample" / name).read_text(encoding="utf-8"))
             for n, name in ((1, "stage1_qlora.yml"), (2, "stage2_full.yml"), (3, "stage3_orpo.yml"))}
    write_stage_configs(profile, {**stage[1], "sequence_len": 4096}, {**stage[2], "sequence_len": 4096}, base_model="model",
                        stage3={**stage[3], "sequence_len": 64})
    cfg = config.load_config(profile).with_settings({"lengths": {"tokenizer": str(tiny_model_dir)}})
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, progress=False, say=lambda s: None)
    assert "stage 3 row (order 123 rejected" in str(exc.value) and "over sequence_len 64" in str(exc.value)
    assert not profile.stage_data(3).exists()
