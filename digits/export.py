"""Export a trained run for use outside Python: `python -m digits.export RUN_DIR [--format onnx] [--out FILE]`.

The ONNX model takes `image`, float32 [N, 1, 28, 28] grey levels 0-255 (MNIST-style: bright ink on black; see
digits/images.py to prepare a photo), with any N, and returns `probabilities` [N, 10]: the normalization and the
softmax are inside the graph. Before the file is written under its name, onnxruntime runs it on every image of the
run's validation split and its argmax must equal PyTorch's on all of them; the largest probability difference is
printed. Needs the `export` extra: pip install -e ".[export]" (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from digits import extras, runs
from digits.data.batches import MEAN, STD
from digits.errors import ArgumentParser, UserError, cli

NEEDS = ("onnx", "onnxscript", "onnxruntime")
TOLERANCE = 1e-4  # largest |p_onnx - p_torch| allowed in fp32


class Deployable(nn.Module):
    """The trained net with its input convention inside: grey levels 0-255 in, probabilities out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image / 255.0 - MEAN) / STD
        return torch.softmax(self.net(x), dim=1)


def _check_extra() -> None:
    extras.require(NEEDS, "ONNX export")


def validation_images(cfg: dict, fingerprint: dict | None = None) -> torch.Tensor:
    """The run's own validation split (same folder, fraction and split seed), uint8 [N, 1, 28, 28]."""
    from digits.data.datamodule import DigitsDataModule

    dm = DigitsDataModule.of_run(cfg, fingerprint)
    if dm.val is not None and len(dm.val):
        return dm.val.images
    if dm.test is not None and len(dm.test):  # trained with data.val_fraction=0: check on the test split instead
        return dm.test.images
    raise UserError(
        "the run has no validation split (data.val_fraction=0) and its folder no test.csv: no images to check "
        "the export against",
        dm.data_dir,
    )


def export_onnx(model: Deployable, out: Path, images: torch.Tensor) -> float:
    """Write the ONNX file (via a temporary name) after checking it against PyTorch; return the largest
    probability difference."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # notes on torchvision ops this model does not use
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    worst = 0.0

    def write(tmp: Path) -> None:
        nonlocal worst
        try:
            program = torch.onnx.export(
                model,
                (images[:2].float(),),
                dynamo=True,
                input_names=["image"],
                output_names=["probabilities"],
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                verbose=False,
            )
            program.save(str(tmp))
            disagree, worst = compare(model, tmp, images)
        finally:
            Path(f"{tmp}.data").unlink(missing_ok=True)
        if disagree or worst >= TOLERANCE:
            raise UserError(
                f"the exported model disagrees with PyTorch ({disagree} labels differ, largest "
                f"probability difference {worst:.2e}); nothing written",
                out,
            )

    runs.write_new_file(out, write)  # never replaces a file, and appears whole
    return worst


def compare(model: Deployable, onnx_file: Path, images: torch.Tensor) -> tuple[int, float]:
    """(labels that differ, largest probability difference) between onnxruntime and PyTorch on images."""
    import numpy as np
    import onnxruntime as ort

    exported = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    worst, disagree = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), 1000):
            x = images[start : start + 1000].float()
            want = model(x).numpy()
            got = exported.run(["probabilities"], {"image": x.numpy()})[0]
            worst = max(worst, float(np.abs(got - want).max()))
            disagree += int((got.argmax(1) != want.argmax(1)).sum())
    return disagree, worst


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m digits.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished training run")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/model.onnx")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _check_extra()
    from digits.evaluate import net_from_checkpoint, tested_checkpoint

    ckpt = tested_checkpoint(args.run_dir)
    out = args.out or args.run_dir / "model.onnx"
    if out.exists():
        raise UserError("already exists; choose another --out (digits never replaces a file)", out)
    if not out.parent.is_dir():
        raise UserError("no such folder for --out", out.parent)
    net, cfg = net_from_checkpoint(ckpt)
    images = validation_images(cfg, runs.RunDir(args.run_dir).read_fingerprint())
    worst = export_onnx(Deployable(net), out, images)
    print(
        f"{out}: ONNX from {ckpt}; onnxruntime agrees with PyTorch on all {len(images)} validation images "
        f"(largest probability difference {worst:.1e})"
    )


if __name__ == "__main__":
    main()
