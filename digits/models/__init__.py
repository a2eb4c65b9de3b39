"""One plain nn.Module per architecture; no Lightning here. Pick one with `model=<name>` (conf/model/<name>.yaml).

REGISTRY is how every model is built, in training and from a checkpoint: the `_target_` names an entry, the other keys
are checked against its schema (digits/schema.py) and passed as plain values. Nothing else is ever instantiated.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from digits import schema
from digits.models.alexnet import AlexNet
from digits.models.ann import ANN
from digits.models.deotte import DeotteCNN
from digits.models.init import INIT_SCHEMES, apply_init
from digits.models.lenet import LeNet5
from digits.models.original import OriginalCNN

ARCHITECTURES = (OriginalCNN, LeNet5, AlexNet, ANN, DeotteCNN)
REGISTRY: dict[str, type[nn.Module]] = {f"{cls.__module__}.{cls.__name__}": cls for cls in ARCHITECTURES}
assert sorted(REGISTRY) == sorted(schema.MODEL_TARGETS), "digits.models.REGISTRY and schema.MODEL_TARGETS differ"


def build(model_cfg: Any, what: str = "model") -> nn.Module:
    """The architecture a model config names, from plain checked values (a dict or a composed DictConfig)."""
    from omegaconf import DictConfig, OmegaConf

    from digits.errors import UserError

    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    target = model_cfg.get("_target_") if isinstance(model_cfg, dict) else None
    if target not in REGISTRY:
        raise UserError(f"{what} names a model this project does not have ({str(target)[:80]})")
    values = schema.check_plain(schema.model_schema(target), model_cfg, what)
    return REGISTRY[target](**{k: v for k, v in values.items() if not k.startswith("_")})


__all__ = [
    "ANN",
    "ARCHITECTURES",
    "INIT_SCHEMES",
    "REGISTRY",
    "AlexNet",
    "DeotteCNN",
    "LeNet5",
    "OriginalCNN",
    "apply_init",
    "build",
]
