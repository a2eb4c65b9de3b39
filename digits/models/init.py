"""Weight initialisation schemes the report discusses, for any model.

- default: PyTorch's own (Kaiming-uniform with a=sqrt(5) for conv/linear weights).
- normal: Gaussian N(0, 0.01^2) weights; deep nets then shrink or blow up activations layer by layer.
- xavier: Glorot-uniform weights (derived for tanh: keeps activation variance constant if units are ~linear at 0).
- kaiming: He-normal weights for ReLU (doubles the variance to make up for the half ReLU zeroes).
- zeros: all weights zero. Every unit in a layer then computes the same thing and gets the same gradient, so the
  net barely learns: this exists to show the symmetry problem, not to be used.
Biases start at zero and BatchNorm at (weight 1, bias 0) under every scheme but `default`.
"""

from __future__ import annotations

from torch import nn

from digits.errors import UserError

INIT_SCHEMES = ("default", "normal", "xavier", "kaiming", "zeros")


def apply_init(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise model's weights in place with scheme; return the model."""
    if scheme not in INIT_SCHEMES:
        raise UserError(f"unknown init '{scheme}'; valid: {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if scheme == "normal":
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
