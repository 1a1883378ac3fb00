"""The GPU guards, on made-up devices (no GPU here): each problem one line, before any step runs."""
from __future__ import annotations

import dataclasses
import json

import pytest

from maerak import gpu, profiles
from maerak.errors import ConfigError
from maerak.profiles import get_profile, require_gpu

H100 = gpu.Device(name="NVIDIA H100 80GB HBM3", capability=(9, 0),
                  arch_list=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"),
                  torch_version="2.13.0+cu126", cuda_version="12.6", bf16=True,
                  free_bytes=84 * 10 ** 9, total_bytes=85 * 10 ** 9,
                  bnb_libs=("libbitsandbytes_cpu.so", "libbitsandbytes_cuda126.so", "libbitsandbytes_cuda128.so"))
NEEDS = gpu.memory_needs()


def dev(**kw) -> gpu.Device:
    return dataclasses.replace(H100, **kw)


def test_an_80gb_hopper_with_the_cu126_build_runs_every_step():
    assert gpu.problems(H100, list(NEEDS), ["stage1", "stage2", "submit"], NEEDS) == []


def test_blackwell_is_not_in_a_cu126_build():
    b200 = dev(name="NVIDIA B200", capability=(10, 0))
    found = gpu.problems(b200, [], [], NEEDS)
    assert len(found) == 2
    assert "compute capability 10.0 (sm_100)" in found[0] and "sm_90" in found[0] and "CUDA >= 12.8" in found[0]
    assert "outside sm_60-sm_90" in found[1] and "libbitsandbytes_cuda126.so" in found[1]
    assert all("\n" not in line for line in found)


def test_ptx_of_an_older_arch_is_enough_for_torch():
    assert gpu.arch_problem(dev(capability=(12, 0), arch_list=("sm_90", "compute_90"))) is None
    assert gpu.arch_problem(dev(capability=(8, 9))) is not None  # sm_89 compiled in neither form


def test_a_missing_bitsandbytes_cuda_library_is_named():
    line = gpu.bnb_problem(dev(cuda_version="13.0"))
    assert "no libbitsandbytes_cuda130.so" in line and "libbitsandbytes_cuda126.so" in line


def test_bf16_stages_refuse_a_gpu_without_bf16():
    line = gpu.bf16_problem(dev(name="Tesla V100", bf16=False), ["stage2", "submit"])
    assert "Tesla V100" in line and "stage2, submit" in line
    assert gpu.bf16_problem(dev(bf16=False), []) is None


def test_free_memory_against_the_table():
    found = gpu.problems(dev(name="RTX 4090", free_bytes=23 * 10 ** 9, total_bytes=25 * 10 ** 9),
                         ["stage1", "stage2", "submit"], [], NEEDS)
    assert len(found) == 1 and found[0].startswith(f"stage2 needs ~{NEEDS['stage2']:g} GB") and "23.0 GB free" in found[0]
    # under DeepSpeed, stage 2's single-GPU figure does not apply
    assert gpu.problems(dev(free_bytes=40 * 10 ** 9, count=2), ["stage2"], [], NEEDS, gpus=2) == []
    assert "GPUS=2" in gpu.problems(H100, [], [], NEEDS, gpus=2)[0]


def test_cpu_offload_needs_a_cuda_toolkit():
    offload = json.loads((profiles.ROOT / "axolotl_configs/deepspeed/zero3_offload.json").read_text())
    line = gpu.offload_problem(offload, None, "zero3_offload.json")
    assert "zero3_offload.json" in line and "DeepSpeedCPUAdam" in line and "CUDA_HOME" in line
    assert gpu.offload_problem(offload, "/usr/local/cuda", "zero3_offload.json") is None
    zero3 = json.loads((profiles.ROOT / "axolotl_configs/deepspeed/zero3.json").read_text())
    assert gpu.offload_problem(zero3, None) is None


@pytest.fixture
def cuda(monkeypatch):
    """torch 'sees' a GPU: the probe returns the device each test sets."""
    monkeypatch.setattr(profiles, "has_gpu", lambda: True)
    state = {"dev": H100}
    monkeypatch.setattr(gpu, "probe", lambda: state["dev"])
    return state


def test_require_gpu_reads_the_profile_and_stops_in_one_line(cuda, tmp_path, monkeypatch):
    require_gpu(get_profile("competition"))
    cuda["dev"] = dev(name="RTX 4090", free_bytes=23 * 10 ** 9, total_bytes=25 * 10 ** 9)
    with pytest.raises(ConfigError, match=r"^profile 'competition' cannot run on this GPU: stage2 needs") as exc:
        require_gpu(get_profile("competition"))
    assert "\n" not in str(exc.value)
    require_gpu(get_profile("competition"), stages=(1,))  # stage 1 and the merge fit 23 GB
    # GPUS=2 names zero3.json (no offload); the offload config refuses without CUDA_HOME
    cuda["dev"] = dev(count=2)
    require_gpu(get_profile("competition"), stages=(2,), gpus=2)
    monkeypatch.setattr(profiles, "gpu_needs", lambda p, s, g: (["stage2"], [], {"zero3_offload.json": {
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}}))
    with pytest.raises(ConfigError, match="zero3_offload.json offloads the optimizer"):
        require_gpu(get_profile("competition"), stages=(2,), gpus=2)


def test_gpu_needs_follow_the_yamls():
    steps, bf16, ds = profiles.gpu_needs(get_profile("competition"))
    assert steps == ["stage1", "stage2", "merge", "submit"] and bf16 == ["stage1", "stage2", "submit"] and ds == {}
    steps, _, ds = profiles.gpu_needs(get_profile("competition-orpo"))
    assert "stage3" in steps
    _, _, ds = profiles.gpu_needs(get_profile("competition"), (2,), gpus=2)
    assert list(ds) == [profiles.DEEPSPEED_DEFAULT]


def test_reproduce_stops_when_nvidia_smi_sees_a_gpu_torch_cannot_use(tmp_path, monkeypatch):
    raw = tmp_path / profiles.RAW_DATA
    raw.mkdir(parents=True)
    for s in profiles.SPLITS:
        (raw / f"{s}.json").write_text("[]")
    monkeypatch.setattr(profiles, "has_gpu", lambda: False)
    monkeypatch.setattr(profiles, "nvidia_smi_sees_gpu", lambda: True)
    with pytest.raises(ConfigError, match=r"^nvidia-smi sees a GPU but torch .* (is a CPU build|cannot use it)"):
        profiles.auto_profile(tmp_path)
    monkeypatch.setattr(profiles, "nvidia_smi_sees_gpu", lambda: False)
    assert profiles.auto_profile(tmp_path)[0] == "official-cpu"


def test_the_reason_names_a_cpu_build_or_the_driver():
    assert "is a CPU build" in gpu.torch_cuda_problem("2.13.0+cpu", None)
    line = gpu.torch_cuda_problem("2.13.0", "13.0", "CUDA driver version is insufficient for CUDA runtime version\nmore")
    assert "(CUDA 13.0) cannot use it (CUDA driver version is insufficient" in line and "\n" not in line
