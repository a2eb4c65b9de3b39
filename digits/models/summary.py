"""A torchsummary-style layer table from one forward pass (no extra dependency for a 40-line job)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Row:
    name: str  # e.g. "Conv2d-1": class name and execution index, as torchsummary numbers them
    shape: tuple[int, ...]  # output shape with the batch dimension as -1
    params: int


def layer_table(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28)) -> list[Row]:
    """Rows for every leaf module, in execution order, from a forward pass in eval mode on two zero images."""
    rows: list[Row] = []
    hooks = []

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        shape = (-1, *tuple(output.shape[1:]))
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(Row(f"{type(module).__name__}-{len(rows) + 1}", shape, params))

    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_table(model: nn.Module, rows: list[Row]) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    line, double = "-" * 64, "=" * 64
    out = [line, f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}", double]
    for r in rows:
        shape = "[" + ", ".join(str(d) for d in r.shape) + "]"
        out.append(f"{r.name:>20}  {shape:>25} {r.params:>15,}")
    out += [
        double,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)
