"""Cleaning of task items: placeholder names, stopword markers, special characters,
repeats, POS-checked fillers, empty utterances. Rules and word lists live in
maerak/cleaning.yml; this module only applies them.

Pure functions on `maerak.schema.Item` (frozen): a cleaned item is a new Item built
with `dataclasses.replace`. Options, category and label are never changed. Inference
can call `clean_item` on eval items to see the same text the model was trained on.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from maerak.errors import ConfigError
from maerak.files import load_yaml
from maerak.prompt import has_final_consonant
from maerak.schema import Item
from maerak.typed import number, parse

RULES_FILE = Path(__file__).resolve().parent / "cleaning.yml"
HANGUL = "가-힣"


@dataclass(frozen=True)
class Rules:
    normalize: str
    placeholders: dict[str, str]
    particles: tuple[tuple[str, str], ...]
    stopwords: tuple[str, ...]
    stopword_patterns: tuple[re.Pattern, ...]
    drop_chars: re.Pattern
    punct_runs: re.Pattern
    jamo_runs: re.Pattern | None
    max_jamo_repeat: int
    fillers: frozenset[str]
    filler_candidates: re.Pattern | None
    placeholder_re: re.Pattern | None


@dataclass(frozen=True)
class RulesFile:
    """maerak/cleaning.yml as written: each key's default stated here, once (maerak/typed.py checks it)."""

    normalize: Literal["", "NFC", "NFD", "NFKC", "NFKD"] = ""  # unicodedata's forms ("" = none)
    placeholders: dict[str, str] = dataclasses.field(default_factory=dict)
    particles: tuple[tuple[str, ...], ...] = ()  # (after a final consonant, after a vowel) pairs
    stopwords: tuple[str, ...] = ()
    stopword_patterns: tuple[str, ...] = ()
    keep_characters: str = r"[\w\s]"
    collapse_punctuation: str = "!?,"
    max_jamo_repeat: int = number(0, least=0)
    fillers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(len(p) != 2 for p in self.particles):
            raise ValueError("particles: expected pairs [after a final consonant, after a vowel]")
        if not (self.keep_characters.startswith("[") and self.keep_characters.endswith("]")):
            raise ValueError(f"keep_characters: must be a regex character class, got {self.keep_characters!r}")


def load_rules(path: str | Path = RULES_FILE) -> Rules:
    return rules_from_dict(load_yaml(path, "cleaning rules"), path)


def rules_from_dict(cfg: dict[str, Any], file: str | Path = RULES_FILE) -> Rules:
    f = parse(RulesFile, cfg, file)

    def compile_(key: str, pattern: str) -> re.Pattern:
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{file}: {key}: not a regular expression: {exc}") from None

    placeholders = dict(f.placeholders)
    particles = tuple(sorted(((a, b) for a, b in f.particles), key=lambda p: -max(map(len, p))))
    drop_chars = compile_("keep_characters", "[^" + f.keep_characters[1:])
    punct = "".join(re.escape(c) for c in f.collapse_punctuation)
    punct_runs = re.compile(f"([{punct}])\\1+|\\.{{2,}}|…+") if punct else re.compile(r"\.{2,}|…+")
    max_jamo = f.max_jamo_repeat
    jamo_runs = re.compile(f"([ㄱ-ㅎㅏ-ㅣ])\\1{{{max_jamo},}}") if max_jamo > 0 else None
    fillers = frozenset(f.fillers)
    filler_candidates = None
    if fillers:
        alt = "|".join(re.escape(w) for w in sorted(fillers, key=len, reverse=True))
        filler_candidates = re.compile(f"(?<!\\S)(?:{alt})(?=[\\s,]|\\.|$)")
    placeholder_re = None
    if placeholders:
        alt = "|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True))
        forms = sorted({w for pair in particles for w in pair}, key=len, reverse=True)
        part = "|".join(re.escape(w) for w in forms)
        placeholder_re = re.compile(f"({alt})(?![0-9A-Za-z])" + (f"(?:({part})(?![{HANGUL}]))?" if part else ""))
    return Rules(
        normalize=f.normalize,
        placeholders=placeholders,
        particles=particles,
        stopwords=f.stopwords,
        stopword_patterns=tuple(compile_(f"stopword_patterns[{i}]", p) for i, p in enumerate(f.stopword_patterns)),
        drop_chars=drop_chars,
        punct_runs=punct_runs,
        jamo_runs=jamo_runs,
        max_jamo_repeat=max_jamo,
        fillers=fillers,
        filler_candidates=filler_candidates,
        placeholder_re=placeholder_re,
    )


# --- single rules (each tested on its own) -------------------------------------------

def replace_placeholders(text: str, rules: Rules) -> str:
    """name1 -> its fixed name, with the following particle made to fit that name."""
    if rules.placeholder_re is None or not any(p in text for p in rules.placeholders):
        return text

    def sub(m: re.Match) -> str:
        name = rules.placeholders[m.group(1)]
        particle = m.group(2) if m.lastindex and m.lastindex >= 2 else None
        if not particle:
            return name
        consonant = has_final_consonant(name[-1])
        for after_consonant, after_vowel in rules.particles:
            if particle in (after_consonant, after_vowel):
                return name + (after_consonant if consonant else after_vowel)
        return name + particle

    return rules.placeholder_re.sub(sub, text)


def remove_stopwords(text: str, rules: Rules) -> str:
    for word in rules.stopwords:
        if word in text:
            text = text.replace(word, " ")
    for pattern in rules.stopword_patterns:
        text = pattern.sub(" ", text)
    return text


def remove_special_characters(text: str, rules: Rules) -> str:
    """Drop every character outside `keep_characters` ("…" is first spelled "...")."""
    return rules.drop_chars.sub("", text.replace("…", "..."))


def collapse_repeats(text: str, rules: Rules) -> str:
    text = rules.punct_runs.sub(lambda m: "..." if m.group(0)[0] in ".…" else m.group(0)[0], text)
    if rules.jamo_runs is not None:
        text = rules.jamo_runs.sub(lambda m: m.group(1) * rules.max_jamo_repeat, text)
    return text


@lru_cache(maxsize=1)
def _kiwi():
    from kiwipiepy import Kiwi

    return Kiwi()


def remove_fillers(text: str, rules: Rules) -> str:
    """Drop filler words that kiwipiepy tags IC (interjection) and that stand alone."""
    if rules.filler_candidates is None:
        return text
    candidates = {m.start(): m.end() for m in rules.filler_candidates.finditer(text)}
    if not candidates:
        return text
    spans = []
    for tok in _kiwi().tokenize(text):
        end = tok.start + tok.len
        if tok.tag == "IC" and tok.form in rules.fillers and candidates.get(tok.start) == end:
            m = re.compile(r"[\s,]*(?:\.{2,}|…)?[\s,]*").match(text, end)
            spans.append((tok.start, m.end() if m else end))
    if not spans:
        return text
    out, pos = [], 0
    for start, end in spans:
        out.append(text[pos:start])
        pos = end
    out.append(text[pos:])
    rest = " ".join("".join(out).split())
    # An utterance that is only a filler ("음...", "어?") is a reaction: keep it.
    return rest if re.search(r"[\w]", rest) else text


def normalize_space(text: str) -> str:
    return " ".join(text.split())


def clean_text(text: str, rules: Rules) -> str:
    if rules.normalize:
        text = unicodedata.normalize(rules.normalize, text)
    text = replace_placeholders(text, rules)
    text = remove_stopwords(text, rules)
    text = remove_special_characters(text, rules)
    text = collapse_repeats(text, rules)
    text = normalize_space(text)
    text = remove_fillers(text, rules)
    return normalize_space(text)


# --- items -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Cleaned:
    item: Item | None          # None: the item is dropped
    reason: str = ""           # why it was dropped
    notes: tuple[str, ...] = ()


def clean_item(item: Item, rules: Rules) -> Cleaned:
    """Clean the conversation of one item; options, category and label stay as they are."""
    notes: list[str] = []
    keep_placeholders = any(p in opt for p in rules.placeholders for opt in item.options)
    item_rules = dataclasses.replace(rules, placeholder_re=None) if keep_placeholders else rules
    if keep_placeholders and any(p in u.text for p in rules.placeholders for u in item.conversation):
        notes.append("placeholders kept: an option mentions one")
    refs = set(item.reference_ids)
    utterances = []
    for u in item.conversation:
        text = clean_text(u.text, item_rules)
        if text:
            utterances.append(dataclasses.replace(u, text=text))
        elif refs.intersection(u.ids):
            utterances.append(u)  # original text: the question points at this utterance
            notes.append(f"referenced utterance {'/'.join(u.ids)} is empty after cleaning; kept with its original text {u.text!r}")
        else:
            notes.append(f"dropped empty utterance {'/'.join(u.ids)} (was {u.text!r})")
    if not utterances:
        return Cleaned(None, "conversation is empty after cleaning", tuple(notes))
    return Cleaned(dataclasses.replace(item, conversation=tuple(utterances)), "", tuple(notes))


def model_view(items: list[Item], rules: Rules | None = None) -> list[Item]:
    """Items as the model sees them: cleaned exactly as training data was. Inference scores
    these, so prompts at test time match prompts in training. An item that cleaning would
    drop (empty conversation) is scored as it is; `raw` stays untouched for the submission."""
    rules = rules or load_rules()
    return [clean_item(it, rules).item or it for it in items]
