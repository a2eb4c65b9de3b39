"""Epoch time of this project's trainer against a plain PyTorch loop in the report's style, in one process.

    python benchmarks/train_speed.py --device cpu                 # defaults finish in a few minutes on 2 cores
    python benchmarks/train_speed.py --device cuda --batch-size 512 --epochs 10

(a) baseline: DataLoader over a TensorDataset of float images (per-sample indexing and collation), fp32, SGD,
    one validation pass per epoch: the report's loop.
(b) digits: the project's own Trainer, DataModule and LightningModule with their defaults for the device
    (data as uint8 tensors on the device, channels_last where the model is faster so, bf16-mixed on GPUs and on
    CPUs with bf16 instructions; its line names the precision and layout chosen), built from the real config.
Both see the same split, the same number of batches per epoch, the same batch size and learning rate. Epoch times
are steady state (median of epoch 2 onwards: epoch 1 pays start-up; so --epochs is at least 2). Each loop's line
gives images/s and the arithmetic rate (GFLOP/s, from torch's FLOP counter on one training step of the model:
forward, backward, no optimizer). The last line is `ratio=<b/a>` of epoch times: below 1, (b) is faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process-wide, cumulative


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import digits.schema  # noqa: F401  (registers the config schema that conf/train.yaml builds on)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def baseline(dm, batches: int, args: argparse.Namespace, device: torch.device) -> dict:
    """The report's loop: float tensors in a TensorDataset, a DataLoader, host-to-device copies per step."""
    from digits.data.batches import normalize
    from digits.models import OriginalCNN

    torch.manual_seed(args.seed)
    x_train, y_train = normalize(dm.train.images.cpu()), dm.train.labels.cpu()
    x_val, y_val = normalize(dm.val.images.cpu()), dm.val.labels.cpu()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=1000)
    model = OriginalCNN().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.epochs):
        sync(device)
        start = time.perf_counter()
        model.train()
        for i, (x, y) in enumerate(loader):
            if i >= batches:
                break
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
        sync(device)
        times.append(time.perf_counter() - start)
    return {"epoch_seconds": times, "net": model, "peak_mb": peak_memory_mb(device)}


def project(batches: int, args: argparse.Namespace, device: torch.device, out_dir: Path) -> dict:
    """This project's trainer with its defaults for the device, built from conf/ like `python -m digits.train`."""
    from digits.build import build
    from digits.callbacks import RunRecorder

    cfg = compose(
        [
            f"paths.output_dir={out_dir}",
            f"data.batch_size={args.batch_size}",
            f"lr={args.lr}",
            f"seed={args.seed}",
            f"trainer.max_epochs={args.epochs}",
            f"trainer.limit_train_batches={batches}",
            f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            "trainer.enable_progress_bar=false",
            "callbacks.early_stopping=null",
            *([f"data.dir={args.data_dir}"] if args.data_dir else []),
            *args.override,
        ]
    )
    rec = RunRecorder()
    dm, module, trainer = build(cfg, callbacks=[rec])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer.fit(module, datamodule=dm)
    layout = ", channels_last" if module.channels_last else ""
    compiled = ", compiled" if module.compile_net else ""
    setup = f"{trainer.precision}{layout}{compiled}"  # what the defaults (and overrides) chose on this machine
    return {
        "epoch_seconds": rec.epoch_seconds,
        "net": module.net,
        "peak_mb": peak_memory_mb(device),
        "dm": dm,
        "setup": setup,
        "precision": str(trainer.precision),
    }


def test_accuracy(net: torch.nn.Module, dm, device: torch.device, precision: str) -> float | None:
    from digits.evaluate import predict_probs

    if dm.test is None or dm.test.labels is None:
        return None
    net.to(device)
    probs = predict_probs(net, dm.test.images.to(device), precision=precision)  # each loop's own precision
    return float((probs.argmax(1) == dm.test.labels.cpu()).float().mean())


def training_flops_per_image(batch: int = 64) -> float:
    """FLOPs of one training image (forward + backward) of the `original` CNN, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from digits.models import OriginalCNN

    net = OriginalCNN()
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops() / batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=None, help="images per epoch (default: 12,800 on cpu, all)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="a CSV folder (default: the embedded MNIST)")
    p.add_argument("--record", type=Path, default=None, help="also write the raw numbers here, as JSON")
    p.add_argument("override", nargs="*", help="extra config overrides for (b), e.g. compile=true")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (epoch 1 is warm-up)")

    with tempfile.TemporaryDirectory() as tmp:
        # The DataModule of (b) also provides the split for (a), so both train on the same images.
        data_args = [f"data.dir={args.data_dir}"] if args.data_dir else []
        dm_cfg = compose([f"data.batch_size={args.batch_size}", f"seed={args.seed}", *data_args])
        from hydra.utils import instantiate

        dm = instantiate(dm_cfg.data, on_device=False)
        dm.prepare_data()
        dm.setup()
        n_train = len(dm.train)
        images = args.train_images or (12_800 if device.type == "cpu" else n_train)
        batches = max(1, min(images, n_train) // args.batch_size)

        card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
        print(
            f"device={device} ({card}), "
            f"torch {torch.__version__}, threads={torch.get_num_threads()}, batch={args.batch_size}, "
            f"batches/epoch={batches} ({batches * args.batch_size} images), epochs={args.epochs}"
        )
        results = {}
        results["a"] = baseline(dm, batches, args, device)
        results["a"]["acc"] = test_accuracy(results["a"]["net"], dm, device, "32-true")
        results["b"] = project(batches, args, device, Path(tmp))
        results["b"]["acc"] = test_accuracy(results["b"]["net"], results["b"]["dm"], device, results["b"]["precision"])

    chosen = " ".join(args.override) or "defaults"  # the settings (b) ran with, then what they resolved to
    names = {"a": "plain PyTorch loop (DataLoader, fp32)", "b": f"digits trainer ({chosen}: {results['b']['setup']})"}
    flops = training_flops_per_image()
    print(f"original CNN: {flops / 1e6:.1f} MFLOP per training image (forward + backward, torch's FLOP counter)")
    steady = {}
    for key, r in results.items():
        steady[key] = statistics.median(r["epoch_seconds"][1:])
        ips = batches * args.batch_size / steady[key]
        acc = "n/a" if r["acc"] is None else f"{100 * r['acc']:.2f}%"
        epochs = ", ".join(f"{s:.2f}" for s in r["epoch_seconds"])
        print(
            f"({key}) {names[key]}: {steady[key]:.3f} s/epoch, {ips:,.0f} img/s, {ips * flops / 1e9:.1f} GFLOP/s, "
            f"test acc {acc}, peak mem {r['peak_mb']:,.0f} MiB  [epochs: {epochs}]"
        )
    print(f"ratio={steady['b'] / steady['a']:.3f}")
    if args.record:  # the run's raw output, the form benchmarks/records/ commits
        record = {
            "benchmark": "train_speed",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": f"{device} ({card})",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": args.batch_size,
            "batches_per_epoch": batches,
            "overrides": args.override,
            "mflop_per_image": flops / 1e6,
            "loops": {
                key: {
                    "name": names[key],
                    "epoch_seconds": r["epoch_seconds"],
                    "test_acc": r["acc"],
                    "peak_mb": r["peak_mb"],
                }
                for key, r in results.items()
            },
            "ratio": steady["b"] / steady["a"],
        }
        args.record.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
