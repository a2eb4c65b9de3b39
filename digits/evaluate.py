"""Inference on a whole split with plain torch: used after training, by the ensemble and by the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from digits.data.batches import TensorBatches
from digits.errors import UserError


@torch.no_grad()
def predict_probs(net: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities [N, 10] (float32, on the CPU) for uint8 images [N, 1, 28, 28] on the net's device."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    images = images.to(device)
    out = []
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    for (x,) in TensorBatches(images, None, batch_size, shuffle=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(x)
        out.append(torch.softmax(logits.float(), dim=1))
    net.train(was_training)
    return torch.cat(out).cpu() if out else torch.zeros(0, 10)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; a truncated or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such checkpoint", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign globals, not a torch file at all...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"not a readable digits checkpoint ({first[:200]})", path) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "digits_config" not in ckpt:
        raise UserError("not a digits checkpoint (no state_dict / digits_config)", path)
    return ckpt


def net_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the bare architecture from the config stored in the checkpoint and load its weights."""
    ckpt = load_checkpoint(path)
    cfg = ckpt["digits_config"]
    net = instantiate(OmegaConf.create(cfg["model"]))
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"weights do not fit the stored model config ({str(e).splitlines()[0]})", path) from None
    return net, cfg
