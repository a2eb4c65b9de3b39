"""Draw a digit and watch a trained run read it: `python -m digits.demo RUN_DIR [--port 7860]`.

A Gradio page with a sketch pad (the ten probabilities are redrawn as you draw) and an upload box for a photo. Both go
through the same preparation as `python -m digits.predict` (digits/images.py), and the page shows the 28x28 image
the model actually saw. Needs the `demo` extra: pip install -e ".[demo]". Runs on this machine only
(127.0.0.1) unless --host says otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from digits import extras
from digits.errors import ArgumentParser, UserError, cli

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine


class Reader:
    """A run's tested model behind the page: an image in, probabilities and the prepared 28x28 out."""

    def __init__(self, run_dir: Path):
        from digits.evaluate import net_from_checkpoint, precision_of, tested_checkpoint

        self.checkpoint = tested_checkpoint(run_dir)
        self.net, cfg = net_from_checkpoint(self.checkpoint)
        self.precision = precision_of(cfg)  # the run's, as every number it recorded

    def __call__(self, image: Any) -> tuple[dict[str, float], np.ndarray | None]:
        import torch
        from PIL import Image

        from digits.evaluate import predict_probs
        from digits.images import mnist_style

        if isinstance(image, dict):  # the sketch pad's value: background, layers and their composite
            image = image.get("composite")
        if image is None:
            return {}, None
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        seen = mnist_style(image)
        if not seen.any():
            return {}, seen
        probs = predict_probs(self.net, torch.from_numpy(seen)[None, None], 1, precision=self.precision)[0].numpy()
        return {str(d): float(p) for d, p in enumerate(probs)}, _enlarge(seen)


def _enlarge(seen: np.ndarray, factor: int = 8) -> np.ndarray:
    """The 28x28 input shown large, each pixel a visible square."""
    return np.kron(seen, np.ones((factor, factor), np.uint8))


BRUSH_ON = """() => {
  const pick = () => {
    const brush = document.querySelector('#pad button[aria-label="Brush"]');
    if (brush) { brush.click(); } else { setTimeout(pick, 200); }
  };
  pick();
}"""


def build(reader: Reader):  # -> gr.Blocks
    import gradio as gr

    with gr.Blocks(title="digits: draw a digit") as page:
        gr.Markdown(f"## Draw a digit\nModel: `{reader.checkpoint}`. Draw with the mouse, or upload a photo.")
        with gr.Row():
            pad = gr.Sketchpad(
                label="draw here",
                type="pil",
                image_mode="RGBA",
                canvas_size=(280, 280),
                fixed_canvas=True,
                brush=gr.Brush(default_size=14, colors=["#000000"], color_mode="fixed"),
                layers=False,
                elem_id="pad",
            )
            upload = gr.Image(label="or upload a photo of a digit", type="pil", sources=["upload", "clipboard"])
        with gr.Row():
            probs = gr.Label(num_top_classes=10, label="probabilities", elem_id="probs")
            seen = gr.Image(label="what the model saw (28x28, MNIST-style)", image_mode="L", interactive=False)
        pad.change(reader, pad, [probs, seen], api_name="draw", show_progress="hidden")
        upload.change(reader, upload, [probs, seen], api_name="upload", show_progress="hidden")
        page.load(None, js=BRUSH_ON)  # the pad opens with its brush in hand: draw at once
    return page


def port(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {value}")
    return value


def _check_port(host: str, number: int) -> None:
    """A busy port or an address this machine does not have is one line before the page is built."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, number))
    except OSError as e:
        raise UserError(
            f"cannot listen on {host}:{number} ({e.strerror or e}); choose another --port or --host"
        ) from None


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m digits.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished training run")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines open it")
    parser.add_argument("--port", type=port, default=7860)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    extras.require(("gradio",), "the demo")
    _check_port(args.host, args.port)
    reader = Reader(args.run_dir)
    print(f"digits demo: http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    build(reader).launch(server_name=args.host, server_port=args.port, quiet=True, footer_links=[])


if __name__ == "__main__":
    main()
