"""Hyper-parameter search with Optuna (>= 4) behind `python -m digits.train -m hydra/sweeper=search`.

A Hydra Sweeper, asking Optuna for trials and telling it their results (ask-and-tell): each batch of `n_jobs` trials
is handed to the configured launcher as ordinary jobs, so the basic, parallel and SLURM launchers work unchanged.

- The study lives in a database: by default `sqlite:///<sweep dir>/study.db`, so a search killed at any point
  continues when the same command is re-run into the same `hydra.sweep.dir`: finished trials are kept, a trial whose
  process died is marked failed and its parameters queued again, and `n_trials` counts the study's total.
- `hydra.sweeper.storage=<URL>` (PostgreSQL, MySQL, SQLite) with `hydra.sweeper.study_name=<name>` lets several
  commands, on one machine or many, or as SLURM jobs, work on one study: each asks for trials until the study holds
  `n_trials` of them, so their union is `n_trials`.
- A study remembers which search it is (its space, direction and base config): another search under its name is
  refused in one line before any trial starts, as is a storage that cannot be reached.
- Each trial reports its validation accuracy every epoch (SearchPruning, in the job's process); with
  `hydra.sweeper.pruner=median` or `hyperband` a weak trial stops early and ends `pruned`, in its metrics.json, the
  sweep summary and the study.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from digits.errors import UserError, without_password
from digits.search_space import _one_line, _value, distributions, search_identity

log = logging.getLogger("digits.search")

ENV_STORAGE, ENV_STUDY, ENV_TRIAL = "DIGITS_SEARCH_STORAGE", "DIGITS_SEARCH_STUDY", "DIGITS_SEARCH_TRIAL"
ENV_PRUNER = "DIGITS_SEARCH_PRUNER"  # the pruner is not kept in the storage: the job builds the sweeper's own
PRUNERS = ("none", "median", "hyperband")
# What a storage says to the second of two workers creating its tables or one study at the same moment.
RACES = ("IntegrityError", "already exists", "UNIQUE constraint", "duplicate key", "database is locked")


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a study's storage raises when it cannot be reached or written: Optuna wraps most of SQLAlchemy's errors
    in StorageInternalError, but not all of them."""
    import optuna

    found: list[type[BaseException]] = [optuna.exceptions.StorageInternalError]
    try:
        import sqlalchemy.exc

        found.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:  # a storage other than an RDB one
        pass
    return tuple(found)


def storage_reason(e: BaseException) -> str:
    """The cause of a storage error, in one line: Optuna's StorageInternalError says only that "invalid data, e.g.
    exceeding max length" may be to blame, and SQLAlchemy's error quotes the whole SQL statement; the driver's own
    error (a refused connection, a read-only database) is the reason."""
    storage_error = storage_errors()[0]
    while isinstance(e, storage_error) and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    orig = getattr(e, "orig", None)
    return _one_line(orig if isinstance(orig, BaseException) else e)


def _masked(text: str, url: str) -> str:
    """text with the URL's password starred, wherever a driver quoted it."""
    import re

    found = re.search(r"://[^:/@]+:([^@]*)@", url)
    return text.replace(found.group(1), "***") if found and found.group(1) else text


def pruner(name: str) -> Any:
    import optuna

    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name}: must be one of {', '.join(PRUNERS)}")
    return {
        "none": optuna.pruners.NopPruner(),
        "median": optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(),
    }[name]


class SearchSweeperBase(Sweeper):
    """The sweeper; hydra_plugins/digits_search names a subclass of it, where Hydra looks for plugins."""

    def __init__(
        self,
        sampler: Any = None,
        direction: str = "maximize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        pruner: str = "none",
        params: dict[str, str] | None = None,
        figures: bool = True,
    ):
        self.sampler_cfg, self.direction, self.study_name = sampler, direction, study_name or "digits"
        self.storage, self.n_trials, self.n_jobs = storage, int(n_trials), int(n_jobs)
        self.pruner_name, self.params, self.figures = pruner, dict(params or {}), figures
        self.launcher: Any = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # --- the study -----------------------------------------------------------------------------------------------
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.sweep_dir / 'study.db').absolute()}"

    def open_study(self, arguments: list[str]) -> Any:
        """Create or load the study, check that it is this search's, and fail trials whose process died."""
        import optuna
        from hydra.utils import instantiate

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = self.sampler_cfg  # Hydra has built it from its _target_ when it built this sweeper
        if isinstance(sampler, (dict, DictConfig)):
            sampler = instantiate(sampler)
        for attempt in range(4):
            try:
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.storage_url(),
                    sampler=sampler,
                    pruner=pruner(self.pruner_name),
                    direction=self.direction,
                    load_if_exists=True,
                )
                break
            except Exception as e:  # an unreachable server, a wrong password, a file that is not a database
                # Two workers that start together both create the storage's tables or the study: one wins, and
                # the other finds them on a second look.
                if attempt < 3 and any(m in f"{type(e).__name__} {e}" for m in RACES):
                    import time

                    time.sleep(1.0 + attempt)
                    continue
                text = _masked(storage_reason(e), self.storage_url())
                where = _shown(self.storage_url())
                raise UserError(f"cannot open the study {self.study_name!r} in {where}: {text}") from None
        ours = COMMAND_IDENTITY or search_identity(self.params, self.direction, arguments)
        theirs = study.user_attrs.get("digits_search")
        if theirs is None:
            study.set_user_attr("digits_search", ours)
        elif not isinstance(theirs, dict) or theirs.get("digest") != ours["digest"]:
            from digits.fingerprint import first_difference

            theirs = theirs if isinstance(theirs, dict) else {}
            diff = None
            if isinstance(theirs.get("key"), dict) and "key" in ours:
                diff = first_difference(theirs["key"], ours["key"])
            raise UserError(
                f"the study {self.study_name!r} in {_shown(self.storage_url())} belongs to another search "
                f"({diff or 'its space: ' + str(theirs.get('summary', '?'))}); use another "
                "hydra.sweeper.study_name, or the same search"
            )
        return study

    def _dead(self, study: Any) -> list[Any]:
        """RUNNING trials that a process of this host started and that is gone: killed with its sweeper. Other
        hosts' trials are theirs."""
        import optuna

        from digits.runs import _alive

        out = []
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            owner = t.user_attrs.get("digits_owner")
            ours = owner is None and self.storage is None  # the sweep dir's own study has no other workers
            dead = ours or (owner is not None and owner.get("host") == socket.gethostname() and not _alive(owner))
            if dead and "job_num" in t.user_attrs:
                out.append(t)
            elif dead:  # killed between being asked for and being launched: nothing ran; ask for it again
                study.set_trial_user_attr(t._trial_id, "requeued", True)  # not a failure of the space: not counted
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
        return out

    # --- the loop ------------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        """The search; a storage lost on the way (a server stopped, a disk gone read-only) ends it in one line. The
        trial whose job was running keeps its run record; the next run of the same command finds that trial's owner
        gone, goes back to its job dir and reports the finished result, or resumes an unfinished one."""
        try:
            return self._sweep(arguments)
        except storage_errors() as e:
            raise UserError(
                f"the study {self.study_name!r} in {_shown(self.storage_url())} cannot be read or written "
                f"({_masked(storage_reason(e), self.storage_url())}); every job keeps its record in its dir: once the "
                "storage can be reached and written, re-run the same command to continue"
            ) from None

    def _sweep(self, arguments: list[str]) -> Any:
        import optuna

        space, fixed = distributions(self.params)
        study = self.open_study(arguments)
        # The storage URL may hold a password: it reaches the jobs through this process's environment (inherited by
        # every launcher's workers), never as an override, which Hydra prints and saves in each job's .hydra/.
        os.environ[ENV_STORAGE] = self.storage_url()
        # A trial killed with its sweeper runs again in its own job dir, which resumes from its last checkpoint.
        for frozen in self._dead(study):
            trial = optuna.trial.Trial(study, frozen._trial_id)
            log.info("trial %d was interrupted; resuming it in its job dir", frozen.number)
            self._run(study, [trial], fixed, arguments, int(frozen.user_attrs["job_num"]))
        job_idx = 1 + max((int(t.user_attrs.get("job_num", -1)) for t in study.trials), default=-1)
        exhausted = False
        while not exhausted:
            trials: list[Any] = []
            want, refused = max(0, min(self.n_jobs, self.n_trials - _counted(study))), 0
            while len(trials) < want:
                trial = study.ask(space)
                trial.set_user_attr("digits_owner", {"host": socket.gethostname(), "pid": os.getpid()})
                if _rank(study, trial.number) >= self.n_trials:  # another worker took the last ones meanwhile
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    break
                earlier = _repeat_of(study, trial)
                if earlier is not None:  # a sampler replaying its seed after a restart, or a race between workers
                    trial.set_user_attr("repeat_of", earlier)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    refused += 1
                    if refused >= MAX_REPEATS:
                        log.info("no untried point of the space after %d proposals; the search ends", refused)
                        exhausted = True
                        break
                    continue
                trials.append(trial)
            if not trials:
                break
            self._run(study, trials, fixed, arguments, job_idx)
            job_idx += len(trials)
            _stop_without_progress(study)
        _stop_without_progress(study, at_end=True)
        _wait_for_others(study)
        self._write_results(study)
        return study

    def _run(self, study: Any, trials: list[Any], fixed: list[str], arguments: list[str], job_idx: int) -> None:
        """Launch one batch: trial i is job job_idx + i, owned by this process until it is told."""
        for i, trial in enumerate(trials):
            trial.set_user_attr("digits_owner", {"host": socket.gethostname(), "pid": os.getpid()})
            trial.set_user_attr("job_num", job_idx + i)
        batch = [self._overrides(trial, fixed, arguments) for trial in trials]
        returns = self.launcher.launch(batch, initial_job_idx=job_idx)
        for trial, ret in zip(trials, returns):
            self._tell(study, trial, ret)

    def _overrides(self, trial: Any, fixed: list[str], arguments: list[str]) -> list[str]:
        from digits.cli_args import quote

        values = [f"{k}={_value(v)}" for k, v in trial.params.items()]
        env = [
            f"+hydra.job.env_set.{ENV_STUDY}={quote(self.study_name)}",
            f"+hydra.job.env_set.{ENV_TRIAL}={trial._trial_id}",
            f"+hydra.job.env_set.DIGITS_SEARCH_NUMBER={trial.number}",
            f"+hydra.job.env_set.{ENV_PRUNER}={self.pruner_name}",
        ]
        return [*arguments, *fixed, *values, *env]

    def _tell(self, study: Any, trial: Any, ret: Any) -> None:
        import optuna
        from hydra.core.utils import JobStatus

        from digits.runs import RunDir

        record = RunDir(str(ret.hydra_cfg.hydra.runtime.output_dir)).read_record() if ret.hydra_cfg else None
        status = (record or {}).get("status")
        value = ret._return_value if ret.status == JobStatus.COMPLETED else None
        if status == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif status in ("completed", "early_stopped") and isinstance(value, float) and math.isfinite(value):
            study.tell(trial, value)
        else:
            if (record or {}).get("error"):
                trial.set_user_attr("error", str(record["error"])[:300])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.info("trial %d: %s", trial.number, study.trials[trial.number].state.name.lower())

    # --- what a finished search leaves in its dir --------------------------------------------------------------------
    def _write_results(self, study: Any) -> None:
        import optuna

        from digits.runs import write_json_atomic

        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        states = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in optuna.trial.TrialState}
        where = "study.db in the sweep dir" if self.storage is None else _shown(self.storage_url())  # no local path
        out: dict[str, Any] = {"study_name": self.study_name, "storage": where, "trials": states}
        if complete:
            best = study.best_trial
            out.update(name="optuna", best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info("Best value: %s (trial %d: %s)", best.value, best.number, best.params)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / "optimization_results.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(out)))
        write_json_atomic(self.sweep_dir / "search.json", out)
        if self.figures and len(complete) >= 2:
            _figures(study, self.sweep_dir)


def _wait_for_others(study: Any, poll_s: float = 2.0, limit_s: float = 3600.0) -> None:
    """Several workers share a study: each reports the study's best, so it waits for the others' running trials."""
    import time

    import optuna

    from digits.runs import _alive

    start = time.monotonic()
    while True:
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in running:  # an owner on this host that is gone will never tell: its trial failed (reaped, not awaited)
            owner = t.user_attrs.get("digits_owner")
            if isinstance(owner, dict) and owner.get("host") == socket.gethostname() and not _alive(owner):
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                log.info("trial %d: its worker (pid %s) is gone; marked failed", t.number, owner.get("pid"))
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            return
        if time.monotonic() - start > limit_s:
            log.warning("other workers' trials are still running after %.0f s; reporting the study as it is", limit_s)
            return
        time.sleep(poll_s)


def _never_ran(t: Any) -> bool:
    return bool(t.user_attrs.get("surplus") or t.user_attrs.get("requeued") or "repeat_of" in t.user_attrs)


def _counted_trials(study: Any) -> list[Any]:
    """Trials that count towards n_trials: finished (complete, pruned or failed) or running. A failed trial counts,
    else a space where every trial fails would never end; only trials that never ran are left out (asked for past
    n_trials by a racing worker, or asked for by a process killed before it launched them, and asked for again)."""
    import optuna

    states = tuple(optuna.trial.TrialState)
    return [
        t
        for t in study.get_trials(deepcopy=False, states=states)
        if t.state != optuna.trial.TrialState.WAITING
        and not (t.state == optuna.trial.TrialState.FAIL and _never_ran(t))
    ]


MAX_REPEATS = 50  # proposals in a row that repeat a trial: the space (a finite one) holds no untried point


def _repeat_of(study: Any, trial: Any) -> int | None:
    """The number of an earlier trial with the same parameters, if any: every trial of a study is a new point.
    Earlier trials win, so of two workers that proposed one point at once, the later one asks again."""
    params = trial.params
    for t in _counted_trials(study):
        if t.number < trial.number and t.params == params:
            return t.number
    return None


NO_PROGRESS = 3  # failed trials, with none finished, after which a search stops: its space or base config is broken


def _stop_without_progress(study: Any, at_end: bool = False) -> None:
    """A search whose first trials all fail would go on failing: stop it in one line naming the first failure. At
    its end (n_trials reached, or a finite space exhausted), any search all of whose trials failed says so too."""
    import optuna

    counted = _counted_trials(study)
    failed = [t for t in counted if t.state == optuna.trial.TrialState.FAIL]
    if len(failed) >= (1 if at_end else NO_PROGRESS) and len(failed) == len(counted):
        first = failed[0]
        why = first.user_attrs.get("error") or "see its job dir's train.log"
        raise UserError(
            f"the search stopped: its first {len(failed)} trials all failed (trial {first.number}: {why}); fix the "
            "search space or the base config"
        )


def _counted(study: Any) -> int:
    return len(_counted_trials(study))


def _rank(study: Any, number: int) -> int:
    """How many counted trials came before trial `number`: lower numbers win when workers race for the last."""
    return sum(t.number < number for t in _counted_trials(study))


def _figures(study: Any, out: Path) -> None:
    """Optuna's own matplotlib views of the study: its history, and which parameters mattered."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as views

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notes on every view
        for name, draw in (
            ("optimization_history", views.plot_optimization_history),
            ("param_importances", views.plot_param_importances),
        ):
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as e:  # importances need two trials that differ
                log.info("no %s figure: %s", name, e)
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=110)
            matplotlib.pyplot.close(fig)


COMMAND_IDENTITY: dict[str, Any] | None = None  # set by digits.cli_args for the command this process runs


def _shown(url: str) -> str:
    return without_password(url)


def trial_from_env() -> Any | None:
    """The Optuna trial this job runs, when a search started it (SearchPruning reports to it)."""
    if not os.environ.get(ENV_TRIAL):
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(
            study_name=os.environ[ENV_STUDY],
            storage=os.environ[ENV_STORAGE],
            pruner=pruner(os.environ.get(ENV_PRUNER, "none")),
        )
    except storage_errors() as e:  # the sweeper that launched this job will say it too, when it reports the result
        log.warning("the study's storage cannot be reached (%s): this trial trains without pruning", storage_reason(e))
        return None
    return optuna.trial.Trial(study, int(os.environ[ENV_TRIAL]))
