"""Train one model (or a sweep of them): `python -m digits.train model=original optim=sgd lr=0.1`.

A thin entry point: digits.cli_args checks the command line (one-line errors, before torch is imported) and claims
the run dir, Hydra composes the config, digits.pipeline runs it, and digits.runs records it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from digits import cli_args, runs
from digits.errors import EXIT_USER_ERROR, Interrupted, UserError, report

log = logging.getLogger("digits.train")


def quiet_libraries() -> None:
    """Lightning's advertising, a deprecation inside Lightning and its SLURM hint are not for our users."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = str(record.msg)
            return not (msg.startswith("💡 Tip") or ("srun" in msg and "not used" in msg))

    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_Drop())
    logging.getLogger("lightning.fabric.utilities.rank_zero").addFilter(_Drop())
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    # Nothing is logged per step (metrics are read once per epoch), so Lightning's step-logging interval is moot.
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available on your system but is not used.*")
    # A run dir is claimed by one process, so checkpoints already in it are this run's own, met again on resume.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    import lightning  # noqa: F401  (gives its loggers their own console handlers, removed below)

    if logging.getLogger().handlers:  # under Hydra, whose root handlers print and write train.log
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            for handler in list(logging.getLogger(name).handlers):  # Lightning's own would print twice
                logging.getLogger(name).removeHandler(handler)


def _is_ddp_child() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0


def _interrupted(run: runs.RunDir, signum: int, sweep_dir: str | None = None) -> None:
    how = runs.resume_command(run.path)
    if sweep_dir is not None:
        how = f"the same command with hydra.sweep.dir={cli_args.quote(sweep_dir)}"
    print(f"digits: interrupted by {signal.Signals(signum).name}; continue with: {how}", file=sys.stderr)
    sys.exit(128 + signum)


def _task(cfg: DictConfig) -> float:
    quiet_libraries()
    hc = HydraConfig.get()
    run = runs.RunDir(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, run)
    resume = cfg.get("resume") is not None
    try:
        prior = run.read_record()
        if resume and prior and prior.get("status") in runs.FINISHED:
            raise UserError(f"run already finished (status {prior['status']}); nothing to resume", run.path)
        if resume and run.last_checkpoint.is_file():
            from digits.evaluate import load_checkpoint

            load_checkpoint(run.last_checkpoint)  # weights_only; a damaged file is one line, before Lightning loads
        if cfg.data.get("dir"):
            from digits.data.csv import check_folder

            check_folder(cfg.data.dir)  # bad data is reported before Lightning is even imported
        from digits.pipeline import run as run_pipeline

        record = run_pipeline(cfg, run, resume=resume)
    except UserError as e:
        report(e)
        if not resume:
            run.discard()
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as e:
        _interrupted(run, e.signum)
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to record, nothing left behind
        if not resume:
            run.discard()
        sys.exit(128 + signal.SIGINT)
    except OSError as e:  # a full disk or a vanished dir mid-run: the environment, not a bug of ours
        report(UserError(f"cannot write: {e.strerror or e}", e.filename or run.path))
        sys.exit(EXIT_USER_ERROR)
    return _objective(record.to_json() if record else None)


def _objective(record: dict[str, Any] | None) -> float:
    """What a job returns to a sweeper that maximizes (Optuna): the validation accuracy of the weights it tested."""
    return float((runs.tested_val_acc(record) if record else None) or 0.0)


def _sweep_job(cfg: DictConfig, run: runs.RunDir) -> float:
    """One job of a multirun: skip it if it finished before, resume it if interrupted, record failures."""
    prior = run.read_record()  # the sweep dir's identity (cli_args) makes this job's dir this job's own
    if prior and prior.get("status") in runs.FINISHED:
        log.info("job %s already %s; skipping", run.path, prior["status"])
        return _objective(prior)
    try:
        run.claim()
    except UserError as e:
        report(e)
        return 0.0
    from digits.pipeline import run as run_pipeline

    try:
        resume = run.last_checkpoint.is_file()
        if resume:
            from digits.evaluate import load_checkpoint

            load_checkpoint(run.last_checkpoint)
        record = run_pipeline(cfg, run, resume=resume)
    except Interrupted as e:
        _interrupted(run, e.signum, str(HydraConfig.get().sweep.dir))
    except Exception as e:  # one broken job must not take the sweep down
        if isinstance(e, UserError):
            report(e)
        else:
            log.exception("job %s failed", run.path)
        run.write_record(runs.RunRecord.failed(e, run.overrides()))
        return 0.0
    finally:
        run.release()
    return _objective(record.to_json() if record else None)


class _without_sbatch_echo:
    """submitit prints sbatch's complaint to stderr before raising it; we say it once, in our own line."""

    class _Filter:
        def __init__(self, stream: Any):
            self.stream, self.dropped = stream, False

        def write(self, text: str) -> int:
            if text == "\n" and self.dropped:  # print() sends the line's end on its own
                self.dropped = False
                return 1
            kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("sbatch: error"))
            self.dropped = kept != text
            return self.stream.write(kept) if kept else len(text)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.stream, name)

    def __enter__(self) -> None:
        self.saved, sys.stderr = sys.stderr, self._Filter(sys.stderr)

    def __exit__(self, *exc: object) -> None:
        sys.stderr = self.saved


def _is_user_facing(e: BaseException) -> bool:
    """Errors of the user's setup, not of our code: a launcher (SLURM, joblib) refusing, a Hydra config error."""
    from hydra.errors import HydraException

    module = type(e).__module__ or ""
    return isinstance(e, HydraException) or module.startswith(("submitit", "subprocess")) or "sbatch" in str(e)


def _launcher_error(e: BaseException) -> str:
    """sbatch's own reason, when there is one ('Requested node configuration is not available')."""
    text = str(getattr(e, "stderr", "") or "") + "\n" + str(e)
    reasons = [line.strip() for line in text.splitlines() if "error:" in line.lower()]
    if reasons:
        return f"the cluster refused the jobs: {reasons[-1]}"
    # The whole message on one line: Hydra puts the reason after "Error in call to target '...':" on the next one.
    whole = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    return f"the sweep could not be launched: {whole[:400]}"


_hydra_main = hydra.main(version_base="1.3", config_path=str(cli_args.CONF_DIR), config_name="train")(_task)


def main(argv: list[str] | None = None) -> None:
    """Check and complete the command line (one-line errors, resume=DIR, the run dir), then hand it to Hydra."""
    got: list[int] = []

    def stop(signum: int, _frame: object) -> None:  # SIGTERM before training behaves as Ctrl-C does
        got.append(signum)
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # one ignored from the start stays ignored
        signal.signal(signal.SIGTERM, stop)
    try:
        _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # before training started: nothing was recorded, and nothing is left behind
        sys.exit(128 + (got[-1] if got else signal.SIGINT))


def _main(args: list[str]) -> None:
    from digits import sweep

    claimed = None
    # Signals wait while the run dir is claimed and handed over, so a Ctrl-C there cannot strand an empty dir.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    if not _is_ddp_child():
        try:
            args, claimed = cli_args.prepare(args)
        except UserError as e:
            report(e)
            sys.exit(EXIT_USER_ERROR)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        _run_hydra(args)
    finally:
        if claimed is not None:
            claimed.done()
    if sweep.LAST is not None and sweep.LAST.ok == 0:
        print(f"digits: error: {sweep.LAST.sweep_dir}: no job of the sweep produced a result", file=sys.stderr)
        sys.exit(1)


def _run_hydra(args: list[str]) -> None:
    from digits import sweep

    sys.argv = [sys.argv[0], *args]
    sweep.LAST = None
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's errors reach us, to be told in one line below
    try:
        with _without_sbatch_echo():
            _hydra_main()
    except UserError as e:  # the search sweeper's (a storage it cannot open, a study of another search)
        report(e)
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        if not _is_user_facing(e):
            raise
        report(UserError(_launcher_error(e)))
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
