"""Would test-time shifts help? Each run's tested weights, scored on its own validation split with and without
averaging the softmax over copies of each image shifted by one pixel.

    python results/tta_check.py outputs/results/best/*_seed=* outputs/results/best_more/*_seed=*

Validation only: whether to use shifts at test time is a choice, and the test split chooses nothing. Each run holds
out its own split (the seed draws it), so a run is only ever scored on images it never trained on.
"""

from __future__ import annotations

import sys

import torch

from digits.data.datamodule import DigitsDataModule
from digits.evaluate import net_from_checkpoint, precision_of, predict_probs, tested_checkpoint

VIEWS = {
    "plain": [(0, 0)],
    "5 views (±1 px)": [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)],
    "9 views (±1 px)": [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
}


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move every image by (dy, dx) pixels, filling with background (0) rather than wrapping around."""
    h, w = images.shape[-2:]
    out = torch.zeros_like(images)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def main(run_dirs: list[str]) -> None:
    errors = dict.fromkeys(VIEWS, 0)
    total = 0
    for run in run_dirs:
        net, cfg = net_from_checkpoint(tested_checkpoint(run))
        dm = DigitsDataModule.of_run(cfg)
        assert dm.val is not None and dm.val.labels is not None
        line = []
        for name, shifts in VIEWS.items():
            probs = torch.stack(
                [predict_probs(net, shifted(dm.val.images, dy, dx), precision=precision_of(cfg)) for dy, dx in shifts]
            ).mean(0)
            wrong = int((probs.argmax(1) != dm.val.labels).sum())
            errors[name] += wrong
            line.append(f"{name} {wrong}")
        total += len(dm.val)
        print(f"{run}: validation errors of {len(dm.val)}: " + ", ".join(line), flush=True)
    for name, wrong in errors.items():
        print(f"all runs, {name}: {wrong} errors of {total} ({100 * (1 - wrong / total):.3f}%)")


if __name__ == "__main__":
    main(sys.argv[1:])
