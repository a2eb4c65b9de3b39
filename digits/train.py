"""Train one model (or a sweep of them): `python -m digits.train model=original optim=sgd lr=0.1`.

A thin entry point: it checks the command line (one-line errors, in about a second, before torch is imported),
lets Hydra compose the config and create the run dir, and hands the run to digits.pipeline. A run writes into
its run dir: config.yaml (resolved), TensorBoard events, checkpoints/{best,last}.ckpt, predictions.npz,
metrics.json and, for an unlabelled test.csv, submission.csv.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from digits import cli_args, runs
from digits.errors import EXIT_USER_ERROR, Interrupted, UserError, report

log = logging.getLogger("digits.train")


def _record_interrupt(run_dir: Path, signum: int) -> None:
    """Mark the run interrupted (keeping what metrics.json held) and tell the user how to resume."""
    prior = runs.read_metrics(run_dir) or {}
    runs.write_json_atomic(
        run_dir / runs.METRICS,
        {
            **{k: v for k, v in prior.items() if k != "status"},
            "status": "interrupted",
            "signal": signal.Signals(signum).name,
            "resume": f"python -m digits.train resume={run_dir}",
        },
    )
    print(
        f"digits: interrupted by {signal.Signals(signum).name}; continue with: python -m digits.train resume={run_dir}",
        file=sys.stderr,
    )


def _discard(run_dir: Path) -> None:
    """Remove what Hydra created for a run that failed before producing anything, so no half-run is left."""
    if runs.holds_results(run_dir) or not run_dir.is_dir():
        return
    made_here = {".hydra", "train.log", "config.yaml"}
    if all(p.name in made_here or p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # the date folder, if this was its only run


def _is_ddp_child() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0


def _check_last_checkpoint(run_dir: Path) -> None:
    """weights_only=True; a truncated or foreign file is a one-line error (before the heavy imports)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        from digits.evaluate import load_checkpoint

        load_checkpoint(last)


def _task(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run_dir)
    resume = cfg.get("resume") is not None
    try:
        prior = runs.read_metrics(run_dir)
        if resume and prior and prior.get("status") in runs.FINISHED:
            raise UserError(f"run already finished (status {prior['status']}); nothing to resume", run_dir)
        if not resume and runs.holds_results(run_dir) and not _is_ddp_child():
            raise UserError(f"already holds a run; resume it with resume={run_dir} or choose another dir", run_dir)
        if resume:
            _check_last_checkpoint(run_dir)
        if cfg.data.get("dir"):
            from digits.data.csv import check_folder

            check_folder(cfg.data.dir)  # bad data is reported before Lightning is even imported
        from digits.pipeline import run

        metrics = run(cfg, run_dir, resume=resume)
    except UserError as e:
        report(e)
        if not resume:
            _discard(run_dir)
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as e:
        _record_interrupt(run_dir, e.signum)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to record
        sys.exit(128 + signal.SIGINT)
    except OSError as e:  # a full disk or a vanished dir mid-run: the environment, not a bug of ours
        report(UserError(f"cannot write: {e.strerror or e}", e.filename or run_dir))
        sys.exit(EXIT_USER_ERROR)
    return float(metrics.get("val_acc_best") or 0.0)


def _sweep_job(cfg: DictConfig, run_dir: Path) -> float:
    """One job of a multirun: skip it if it finished before, resume it if interrupted, record failures."""
    prior = runs.read_metrics(run_dir)
    if prior and prior.get("overrides") not in (None, runs.read_overrides(run_dir)):
        # Another sweep's job lives here: never overwrite its results.
        report(UserError(f"holds a different job ({' '.join(prior['overrides'])}); left untouched", run_dir))
        return 0.0
    if prior and prior.get("status") in runs.FINISHED:
        log.info("job %s already %s; skipping", run_dir, prior["status"])
        return float(prior.get("val_acc_best") or 0.0)
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    from digits.pipeline import run

    try:
        if resume:
            _check_last_checkpoint(run_dir)
        metrics = run(cfg, run_dir, resume=resume)
    except Interrupted as e:
        _record_interrupt(run_dir, e.signum)
        sys.exit(128 + e.signum)
    except Exception as e:  # one broken job must not take the sweep down
        if isinstance(e, UserError):
            report(e)
        else:
            log.exception("job %s failed", run_dir)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        runs.write_json_atomic(
            run_dir / runs.METRICS,
            {
                "status": "failed",
                "error": f"{type(e).__name__}: {first}",
                "overrides": runs.read_overrides(run_dir),
            },
        )
        return 0.0
    return float(metrics.get("val_acc_best") or 0.0)


_hydra_main = hydra.main(version_base="1.3", config_path=str(cli_args.CONF_DIR), config_name="train")(_task)


def main(argv: list[str] | None = None) -> None:
    """Validate and expand the command line (one-line errors, resume=DIR), then hand it to Hydra."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not _is_ddp_child():
        try:
            args = cli_args.prepare(args)
        except UserError as e:
            report(e)
            sys.exit(EXIT_USER_ERROR)
    sys.argv = [sys.argv[0], *args]
    from digits import sweep

    sweep.LAST = None
    _hydra_main()
    if sweep.LAST is not None and sweep.LAST.ok == 0:
        print(f"digits: error: {sweep.LAST.sweep_dir}: no job of the sweep produced a result", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
