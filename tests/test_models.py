"""Architectures: the reference table exactly, shapes for every model, init schemes."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from digits.cli_args import CONF_DIR
from digits.errors import UserError
from digits.models import INIT_SCHEMES, DeotteCNN, OriginalCNN, apply_init
from digits.models.summary import format_table, layer_table

# The report's torchsummary table (docs/report.md).
REFERENCE = [
    ("Conv2d-1", (-1, 32, 24, 24), 832),
    ("BatchNorm2d-2", (-1, 32, 24, 24), 64),
    ("Conv2d-3", (-1, 32, 20, 20), 25_632),
    ("BatchNorm2d-4", (-1, 32, 20, 20), 64),
    ("Dropout2d-5", (-1, 32, 10, 10), 0),
    ("Conv2d-6", (-1, 64, 8, 8), 18_496),
    ("BatchNorm2d-7", (-1, 64, 8, 8), 128),
    ("Conv2d-8", (-1, 64, 6, 6), 36_928),
    ("BatchNorm2d-9", (-1, 64, 6, 6), 128),
    ("Dropout2d-10", (-1, 64, 3, 3), 0),
    ("Conv2d-11", (-1, 128, 1, 1), 73_856),
    ("BatchNorm2d-12", (-1, 128, 1, 1), 256),
    ("Conv2d-13", (-1, 128, 1, 1), 16_512),
    ("BatchNorm2d-14", (-1, 128, 1, 1), 256),
    ("Linear-15", (-1, 100), 12_900),
    ("Linear-16", (-1, 10), 1_010),
]
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_original_matches_the_reference_table() -> None:
    model = OriginalCNN()
    rows = [(r.name, r.shape, r.params) for r in layer_table(model)]
    assert rows == REFERENCE
    assert sum(p.numel() for p in model.parameters()) == 187_062
    text = format_table(model, layer_table(model))
    assert "[-1, 32, 24, 24]" in text and "25,632" in text and "Total params: 187,062" in text


def test_original_widths_are_knobs() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model.channels=[32,128,256]", "model.hidden=256"])
    torch.manual_seed(0)
    wide = instantiate(cfg.model)
    rows = [(r.name, r.shape, r.params) for r in layer_table(wide)]
    assert rows[:5] == REFERENCE[:5]  # the 5x5 stage, where most of the arithmetic is, stays as it was
    assert rows[5] == ("Conv2d-6", (-1, 128, 8, 8), 32 * 9 * 128 + 128)
    assert rows[10] == ("Conv2d-11", (-1, 256, 1, 1), 128 * 9 * 256 + 256)
    assert rows[14] == ("Linear-15", (-1, 256), 256 * 256 + 256)
    assert sum(p.numel() for p in wide.parameters()) == 642_026


def test_deotte_follows_the_keras_original() -> None:
    # Conv(32,3) Conv(32,3) Conv(32,5,s2,same) | Conv(64,3) Conv(64,3) Conv(64,5,s2,same) | Conv(128,4) | Dense(10),
    # each convolution followed by ReLU then BatchNorm, Dropout(0.4) after each block and before the Dense layer.
    rows = layer_table(DeotteCNN())
    convs = [(r.shape, r.params) for r in rows if r.name.startswith("Conv2d")]
    assert convs == [
        ((-1, 32, 26, 26), 320),
        ((-1, 32, 24, 24), 9_248),
        ((-1, 32, 12, 12), 25_632),
        ((-1, 64, 10, 10), 18_496),
        ((-1, 64, 8, 8), 36_928),
        ((-1, 64, 4, 4), 102_464),
        ((-1, 128, 1, 1), 131_200),
    ]
    kinds = [r.name.split("-")[0] for r in rows]
    assert kinds[:3] == ["Conv2d", "ReLU", "BatchNorm2d"]
    assert kinds.count("Dropout") == 3 and kinds[-2:] == ["Dropout", "Linear"]
    assert sum(p.numel() for p in DeotteCNN().parameters()) == 326_410


@pytest.mark.parametrize("name", MODELS)
def test_every_model_maps_a_batch_to_ten_logits_and_learns(name: str) -> None:
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        net = instantiate(compose(config_name="train", overrides=[f"model={name}"]).model)
    x = torch.randn(8, 1, 28, 28)
    y = torch.arange(8) % 10
    assert net(x).shape == (8, 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_model_dropout_knob_reaches_the_layers() -> None:
    for name in MODELS:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            net = instantiate(compose(config_name="train", overrides=[f"model={name}", "model.dropout=0.37"]).model)
        ps = [m.p for m in net.modules() if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d))]
        assert ps and all(p == 0.37 for p in ps), name


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_schemes(scheme: str) -> None:
    torch.manual_seed(0)
    net = apply_init(OriginalCNN(), scheme).requires_grad_(False)  # plain numbers to read, no graph
    w = net.conv3.weight
    if scheme == "zeros":
        assert all(float(p.abs().sum()) == 0 for n, p in net.named_parameters() if "bn" not in n)
    elif scheme == "kaiming":
        fan_in = 32 * 3 * 3
        assert abs(float(w.detach().std()) - (2 / fan_in) ** 0.5) < 0.01
        assert float(net.conv3.bias.abs().sum()) == 0
    elif scheme == "xavier":
        bound = (6 / (32 * 9 + 64 * 9)) ** 0.5
        assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
    elif scheme == "normal":
        assert abs(float(w.detach().std()) - 0.01) < 0.002
    if scheme != "default":
        assert float(net.bn1.weight.min()) == 1.0 and float(net.bn1.bias.abs().sum()) == 0


def test_unknown_init_is_a_user_error() -> None:
    with pytest.raises(UserError, match="valid: default, normal, xavier, kaiming, zeros"):
        apply_init(OriginalCNN(), "orthogonal")


def test_the_config_schema_knows_every_init_scheme() -> None:
    from digits.schema import Init

    assert tuple(m.value for m in Init) == INIT_SCHEMES
