"""`dtype: auto` (maerak/cpu_dtype.py): the choice from the probe's answer, mocked; cached per CPU; pinned values."""
from __future__ import annotations

import math

import pytest

from maerak import cpu_dtype
from training.axolotl_run import overrides


def probe_of(fp32: float, bf16: float):
    calls = []

    def probe():
        calls.append(1)
        return fp32, bf16
    return probe, calls


@pytest.mark.parametrize(("fp32", "bf16", "want"), [
    (1.0, 0.52, "bfloat16"),   # an AVX-512-BF16 CPU (the issue: 1.91x)
    (1.0, 0.5, "bfloat16"),    # AMX
    (1.0, 20.0, "float32"),    # AVX2 only: bf16 emulated, 20x slower
    (1.0, 0.9, "float32"),     # faster, but within the margin
])
def test_auto_chooses_by_the_measured_ratio(tmp_path, fp32, bf16, want):
    probe, _ = probe_of(fp32, bf16)
    lines = []
    choice = cpu_dtype.resolve("auto", tmp_path, probe=probe, log=lines.append)
    assert choice.dtype == want and choice.source == "measured"
    assert choice.ratio == pytest.approx(fp32 / bf16)
    assert f"dtype: {want}" in lines[0] and f"{fp32 / bf16:.2f}x" in lines[0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_a_timing_that_is_not_finite_positive_decides_float32_with_a_line(tmp_path, bad):
    probe, _ = probe_of(1.0, bad)
    lines = []
    choice = cpu_dtype.resolve("auto", tmp_path, probe=probe, log=lines.append)
    assert choice.dtype == "float32" and choice.ratio is None
    assert "not finite positive" in lines[0]


def test_the_decision_is_cached_per_cpu_so_a_rerun_never_flips(tmp_path):
    probe, calls = probe_of(1.0, 0.5)
    first = cpu_dtype.resolve("auto", tmp_path, probe=probe, log=lambda _: None)
    noisy, noisy_calls = probe_of(1.0, 2.0)  # a re-measurement would say float32
    again = cpu_dtype.resolve("auto", tmp_path, probe=noisy, log=lambda _: None)
    assert (first.dtype, again.dtype, again.source) == ("bfloat16", "bfloat16", "cached")
    assert len(calls) == 1 and not noisy_calls
    assert cpu_dtype.cache_file(tmp_path).name == f"cpu-{cpu_dtype.cpu_key()}.json"
    # another CPU (another key) measures afresh
    cpu_dtype.cache_file(tmp_path).rename(tmp_path / "cpu-other.json")
    assert cpu_dtype.resolve("auto", tmp_path, probe=noisy, log=lambda _: None).dtype == "float32" and noisy_calls


def test_pinned_dtypes_are_not_measured_and_stay_out_of_the_environment(tmp_path):
    probe, calls = probe_of(1.0, 0.5)
    pinned = {d: cpu_dtype.resolve(d, tmp_path, probe=probe) for d in ("float32", "bfloat16")}
    assert {d: c.dtype for d, c in pinned.items()} == {"float32": "float32", "bfloat16": "bfloat16"} and not calls
    assert cpu_dtype.environment(pinned) == ""
    auto = cpu_dtype.resolve("auto", tmp_path, probe=probe, log=lambda _: None)
    assert cpu_dtype.environment({"score": auto, "stage1": pinned["float32"]}) == "score=bfloat16"
    with pytest.raises(ValueError, match="'fp8'"):
        cpu_dtype.resolve("fp8", tmp_path)


def test_stamps_environment_changes_with_the_choice_only(tmp_path):
    from maerak.stamps import environment_version

    (tmp_path / "requirements.lock").write_text("torch==2\n")
    plain = environment_version(tmp_path)
    assert environment_version(tmp_path, "") == plain
    assert len({plain, environment_version(tmp_path, "score=float32"), environment_version(tmp_path, "score=bfloat16")}) == 3


def test_the_launcher_says_what_auto_chose_to_axolotl():
    assert overrides({"bf16": "auto"}, bf16=True) == ["--bf16=True"]
    assert overrides({"bf16": "auto"}, bf16=False) == ["--bf16=False"]
    assert overrides({"bf16": False}, bf16=True) == []  # a pinned YAML is run as it is
    assert overrides({"bf16": "auto"}) == []            # a GPU: Axolotl's own auto


def test_official_cpu_is_auto_and_the_sample_pinned(tmp_path, monkeypatch):
    from maerak.profiles import Profile, load_profiles

    probe, calls = probe_of(1.0, 20.0)  # this AVX2 machine's answer, without the wait
    monkeypatch.setattr(cpu_dtype, "measure", probe)
    profiles = load_profiles()
    off = Profile("official-cpu", {**profiles["official-cpu"], "out": str(tmp_path / "off")})
    choices = cpu_dtype.profile_choices(off, log=lambda _: None)
    assert {k: (c.dtype, c.source) for k, c in choices.items()} == {
        "stage1": ("float32", "pinned"), "stage2": ("float32", "measured"), "score": ("float32", "cached")}
    assert len(calls) == 1 and cpu_dtype.environment(choices) == "score=float32;stage2=float32"
    sample = Profile("sample", {**profiles["sample"], "out": str(tmp_path / "sample")})
    assert {c.source for c in cpu_dtype.profile_choices(sample).values()} == {"pinned"} and len(calls) == 1


def test_the_real_probe_gives_two_finite_positive_timings_on_this_cpu():
    """The measurement `auto` decides by, run here (a few tens of ms a call): both timings usable by `decide`."""
    fp32, bf16 = cpu_dtype.measure(rounds=2)
    assert all(math.isfinite(t) and t > 0 for t in (fp32, bf16))
    assert cpu_dtype.decide(fp32, bf16).ratio == pytest.approx(fp32 / bf16)
