"""The device policy: what a run gets when its config leaves precision open, on each kind of device."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from digits.devices import auto_precision, cpu_has_bf16


def _cfg(accelerator: str = "auto", precision: str | None = None):
    return OmegaConf.create({"accelerator": accelerator, "precision": precision})


@pytest.mark.parametrize(
    "avx512_bf16, amx, expect", [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"), (False, False, "32-true")]
)
def test_cpus_train_in_bf16_only_where_they_do_it_in_hardware(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expect: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert cpu_has_bf16() is (expect == "bf16-mixed")
    assert auto_precision(_cfg("auto")) == auto_precision(_cfg("cpu")) == expect
    assert auto_precision(_cfg("cpu", "32-true")) == "32-true"  # an explicit value wins
    assert auto_precision(_cfg("cpu", "bf16-mixed")) == "bf16-mixed"


@pytest.mark.parametrize("gpu_bf16, expect", [(True, "bf16-mixed"), (False, "32-true")])
def test_a_gpu_follows_its_own_bf16_support_not_the_cpus(
    monkeypatch: pytest.MonkeyPatch, gpu_bf16: bool, expect: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert auto_precision(_cfg("gpu")) == expect


def test_a_torch_without_the_cpu_checks_means_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_precision(_cfg("cpu")) == "32-true"
