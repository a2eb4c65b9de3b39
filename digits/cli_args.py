"""What Hydra lacks, done to the command line before Hydra runs.

- `resume=DIR` is expanded into the overrides saved in DIR, so a resumed run needs no repeated arguments.
- Hydra's errors become one line: an unknown choice lists the valid ones, an unknown key says which key was meant.
- The config is composed once, as Hydra will (`return_hydra_config=True`), and every job of a sweep is composed and
  range-checked (digits/schema.py), so a mistake stops the command before any dir exists.
- The target dir is decided and claimed here: a default dir unique to this process, a given dir never overwritten,
  a sweep dir never shared by two different sweeps. Sweep jobs are named after what they vary.
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from digits import extras, schema
from digits.errors import UserError
from digits.runs import RunDir, os_errors, unique_dir, write_json_atomic


def _find_conf() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):  # source tree, then the copy inside a wheel
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"cannot find the config directory next to {here}")


CONF_DIR = _find_conf()
MULTIRUN_FLAGS = ("-m", "--multirun")
# Hydra's flags that take a value (`--cfg job`, `-cn train`); --info's is optional but never holds '='.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
FLAGS_WITH_VALUE |= {"--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}
MIN_FREE_BYTES = 50 * 2**20


def groups() -> dict[str, list[str]]:
    """Config groups of this project and their choices (file stems), e.g. {'model': ['alexnet', ...]}."""
    out = {}
    for d in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        out[d.name] = sorted(f.stem for f in d.glob("*.yaml"))
    for d in sorted((CONF_DIR / "hydra").glob("*")):
        if d.is_dir():
            out[f"hydra/{d.name}"] = sorted(f.stem for f in d.glob("*.yaml"))
    return out


def groups_help() -> str:
    """The config groups and their choices, for `python -m digits.train --help`."""
    lines = []
    for group, choices in groups().items():
        lines.append(f"  {group + ':':<18} {', '.join(choices)}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("digits_groups", groups_help, replace=True)


def quote(value: str) -> str:
    """A value in Hydra's override grammar, quoted so spaces, commas and '=' stay part of it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def flags_first(args: list[str]) -> list[str]:
    """Flags (with their values) before the overrides: Hydra's argparse cannot take overrides on both sides of -m."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            flags.append(a)
            if a in FLAGS_WITH_VALUE and i + 1 < len(args) and "=" not in args[i + 1]:
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags + overrides


# --- resume -------------------------------------------------------------------------------------------------------
def expand_resume(args: list[str]) -> list[str]:
    """resume=DIR -> the overrides saved in DIR, then any allowed extra arguments, then hydra.run.dir=DIR."""
    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    value = _unquote(given[-1].split("=", 1)[1])
    if not value.strip():
        raise UserError("resume is empty; name the run dir to continue (an unset shell variable?)")
    run = RunDir(value)
    if not run.path.is_dir():
        raise UserError("no such run dir to resume", run.path)
    if not run.overrides_file.is_file():
        raise UserError("not a run dir (no .hydra/overrides.yaml to resume from)", run.path)
    saved = run.overrides(everything=True)
    previous = [o for o in saved if not o.startswith(("resume=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.job."))]
    rest = [a for a in args if not a.startswith(("resume=", "hydra.run.dir="))]
    # What the resume may change is decided by the run's fingerprint (digits.fingerprint), checked in prepare().
    return [*previous, *rest, f"hydra.run.dir={quote(str(run.path))}", f"resume={quote(str(run.path))}"]


def _unquote(value: str) -> str:
    v = value.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        v = v[1:-1].replace("\\" + value.strip()[0], value.strip()[0]).replace("\\\\", "\\")
    return v


# --- composition --------------------------------------------------------------------------------------------------
def parse(args: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException as e:
        raise UserError(f"bad override: {_first_line(e)}") from None


LIST_GROUPS = ("logger",)  # groups whose choices are meant to be combined: logger=[tensorboard,mlflow]


def check_choices(overrides: list[Any]) -> None:
    """Unknown group choices become one line that lists the valid ones (Hydra's own message is a page)."""
    known = groups()
    for o in overrides:
        key = o.key_or_group
        if key not in known or o.is_delete():
            continue
        if o.value() is None:
            raise UserError(f"{key}=null is not how a config group is dropped; write ~{key} instead")
        if len(_choices(o)) > 1 and key not in LIST_GROUPS and not o.is_sweep_override():
            raise UserError(
                f"{key}={o.input_line.split('=', 1)[1]}: {key} takes one choice (a list would merge them, the last "
                f"one winning where they overlap); to run each, sweep them: -m {key}={','.join(map(str, _choices(o)))}"
            )
        for choice in _choices(o):
            if choice not in known[key]:
                hint = _did_you_mean(str(choice), known[key])
                raise UserError(f"unknown {key} '{choice}'{hint}; valid: {', '.join(known[key])}")


def _choices(o: Any) -> list[Any]:
    if o.is_sweep_override():
        try:
            return list(o.sweep_string_iterator())
        except Exception:  # a range or an interval over a group: leave it to Hydra
            return []
    value = o.value()
    return list(value) if isinstance(value, list) else [value]  # logger=[tensorboard,mlflow]: several of a group


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


class Composer:
    """Composes the training config the way `python -m digits.train` will, turning errors into one line."""

    def __init__(self, machine: bool = True) -> None:
        """machine=False leaves out what only running needs (a GPU for hydra/launcher=gpus): for --cfg."""
        from hydra import initialize_config_dir

        self.machine = machine
        self._ctx = initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")

    def __enter__(self) -> Composer:
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)

    def compose(self, overrides: list[str]) -> DictConfig:
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException, ValueError) as e:
            raise UserError(extras.explain_missing_config(str(e)) or self._explain(e, overrides)) from None
        self.plain = schema.validate(cfg)
        extras.check_config(cfg, machine=self.machine)  # a missing package or GPU: before anything is written
        return cfg

    def _explain(self, e: BaseException, overrides: list[str]) -> str:
        text = _first_line(e)
        cause = e.__cause__ or e.__context__
        whole = f"{e} {cause or ''}"
        deleted = next((o[1:].split("=", 1)[0] for o in overrides if o.startswith("~")), None)
        if deleted and ("Could not delete" in whole or "does not support deletion" in whole):
            return f"{deleted} is required; it cannot be removed (~{deleted})"
        if text.startswith("Error merging override") and cause is not None:
            return _bad_value(text[len("Error merging override") :].strip(), _first_line(cause))
        for marker in ("Could not override '", "Could not append to config. An item is already at '"):
            if marker in str(e):
                key = str(e).split(marker, 1)[1].split("'", 1)[0]
                return self._unknown_key(key, overrides)
        if "not in '" in str(e) and "Key '" in str(e):
            key = str(e).split("Key '", 1)[1].split("'", 1)[0]
            full = next((o.split("=", 1)[0].lstrip("+~") for o in overrides if o.split("=", 1)[0].endswith(key)), key)
            return self._unknown_key(full, overrides)
        return f"bad override: {text}"

    def _unknown_key(self, key: str, overrides: list[str]) -> str:
        """`trainer.max_epoch` -> the valid keys of `trainer` and the closest one."""
        if key.startswith("hydra.sweeper.params"):
            return (
                f"{key}: the command line can change the ranges of the keys a search lists, not add keys; write "
                "the search space in an experiment file (conf/experiment/search.yaml shows how)"
            )
        parent, _, leaf = key.rpartition(".")
        keep = [o for o in overrides if o.split("=", 1)[0].lstrip("~") in groups() or o.startswith("experiment=")]
        try:
            from hydra import compose

            base = compose(config_name="train", overrides=keep)
            node = OmegaConf.select(base, parent) if parent else base
        except Exception:
            node = None
        if not isinstance(node, DictConfig):
            removed = next(
                (o for o in overrides if o.startswith("~") and key.startswith(o[1:].split("=")[0] + ".")), None
            )
            return f"{removed} removes {parent}, so {key} cannot be set" if removed else f"unknown key {key}"
        valid = sorted(str(k) for k in node if not str(k).startswith("_"))
        close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
        hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
        where = f"keys of {parent}" if parent else "top-level keys"
        return f"unknown key {key}{hint}; valid {where}: {', '.join(valid)}"


def null_optional_deletions(args: list[str]) -> list[str]:
    """A typed config cannot delete a field (OmegaConf refuses), so `~logger.csv` would fail where `~logger` works;
    where the field may be null, removing the member is what `key=null` does, and the command is given so to Hydra.
    A required key stays as it was, and is refused when composed."""
    dels = [a for a in args if a.startswith("~") and "=" not in a and "." in a]
    if not dels:
        return args
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    values_of_flags = {i + 1 for i, a in enumerate(args) if a in FLAGS_WITH_VALUE}
    rest = [a for i, a in enumerate(args) if a not in dels and not a.startswith("-") and i not in values_of_flags]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            base = compose(config_name="train", overrides=[a for a in rest if "," not in a.split("=", 1)[-1]])
    except (HydraException, OmegaConfBaseException, ValueError):
        return args  # the composition proper will say what is wrong
    out = []
    for a in args:
        key = a[1:]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if a in dels else None
        field = node._get_node(leaf) if isinstance(node, DictConfig) and leaf in node else None
        out.append(f"{key}=null" if field is not None and field._is_optional() else a)
    return out


_KINDS = {"Float": "a number", "Integer": "an integer", "Boolean": "true or false", "String": "a string"}


def _bad_value(override: str, why: str) -> str:
    """`lr=fast` + OmegaConf's complaint -> 'lr must be a number, got 'fast''."""
    key, _, value = override.partition("=")
    key = key.lstrip("+~")
    enum = re.match(r"Invalid value '(.*)', expected one of \[(.*)\]", why)
    if enum:
        return f"unknown {key} '{enum.group(1)}'; valid: {enum.group(2)}"
    kind = re.search(r"could not be converted to (\w+)", why)
    if kind:
        return f"{key} must be {_KINDS.get(kind.group(1), kind.group(1).lower())}, got {value!r}"
    if "Non optional field cannot be assigned None" in why or "field cannot be assigned None" in why:
        return f"{key} cannot be null"
    return f"{override}: {why}"


def _job_overrides(args: list[str], cfg: DictConfig) -> list[list[str]]:
    """Every job of a basic sweep, as Hydra's BasicSweeper will expand it (params from the config first)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = cfg.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + [a for a in args if not a.startswith("-")])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [job for batch in batches for job in batch]


# --- where the command writes -------------------------------------------------------------------------------------
def check_writable(target: Path) -> None:
    """Refuse up front when the output dir cannot be written or its disk is (nearly) full."""
    with os_errors(target, "cannot use it as an output dir"):
        _check_writable(target)


def _check_writable(target: Path) -> None:
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create the output dir: {probe} is not a directory", target)
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UserError(f"output dir is not writable ({e.strerror or e})", target) from None
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"only {free // 2**20} MiB free on the output disk; need at least 50 MiB", target)


def _given(overrides: list[Any], key: str) -> str | None:
    found = [o for o in overrides if o.key_or_group == key]
    return str(found[-1].value()) if found else None


def _target(cfg: DictConfig, overrides: list[Any], multirun: bool) -> tuple[Path, bool]:
    """(the dir this command writes to, whether the user named it), read from the composed config, resolved: the
    dir that is checked and claimed is the dir Hydra will write to, however it was spelled."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    from omegaconf.errors import OmegaConfBaseException

    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except OmegaConfBaseException as e:
        raise UserError(f"{key}: cannot be resolved ({_first_line(e)})") from None
    if value is None or not str(value).strip():
        raise UserError(f"{key} is empty; name a directory (an unset shell variable?)")
    if _given(overrides, key) is not None:
        return Path(str(value)), True
    default = Path(str(value))  # outputs/<date>/<time>
    with os_errors(default, "cannot use it as an output dir"):
        return unique_dir(default.parent, default.name), False


# --- sweep identity: the ordered list of its jobs' fingerprints -----------------------------------------------------
def _sweep_jobs(args: list[str], cfg: DictConfig, composer: Composer) -> list[dict[str, Any]]:
    """Each job of the sweep, composed and checked: its overrides and the fingerprint of its resolved config. A
    search (Optuna) has no job list before it runs: its identity is its base config and search space."""
    from digits import fingerprint

    jobs = _job_overrides(args, cfg)
    if not jobs and not str(cfg.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return [_search_job(args, cfg, composer)]
    hydra_args = [a for a in args if not a.startswith("-") and a.lstrip("+~").startswith("hydra")]
    out = []
    for job in jobs:
        composer.compose(job + hydra_args)
        out.append({"overrides": job, "id": fingerprint.digest(fingerprint.job_key(composer.plain))})
    seen: dict[str, int] = {}
    for i, job in enumerate(out):
        if job["id"] in seen:
            first = seen[job["id"]]
            raise UserError(
                f"jobs {first} ({_varied(out, first)}) and {i} ({_varied(out, i)}) are the same run; a sweep runs "
                "each configuration once (a repeated value, or two spellings of one)"
            )
        seen[job["id"]] = i
    return out


def _search_job(args: list[str], cfg: DictConfig, composer: Composer) -> dict[str, Any]:
    """A search's one entry in sweep.json: its identity (search_space.identity: the resolved base config, where its data
    lies, the space and the direction; not n_trials, the pruner or how the command spelled them), checked first
    at every bound of its space. The same identity is what its study in the storage must hold."""
    from digits import search_space

    params = _search_space(args, cfg, composer)
    ident = search_space.identity(composer.plain, params, str(cfg.hydra.sweeper.get("direction", "maximize")))
    return {
        "overrides": [f"search over {ident['summary']}"],
        "id": ident["digest"],
        "summary": ident["summary"],
        "key": ident["key"],
    }


def _search_space(args: list[str], cfg: DictConfig, composer: Composer) -> dict[str, str]:
    """Compose a job at every bound and choice of a search's space, through the same schema as every run: a value
    no trial could run with is one line now, before the first trial, naming the range it came from. Returns the
    space (the config's, with the command's ranges); the composer is left holding the base config."""
    from digits import search_space

    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {}, resolve=True)
    given = [a for a in args if not a.startswith("-")]
    base = []
    for arg, o in zip(given, parse(given)):
        name = o.key_or_group.lstrip("+~")
        if name.startswith("hydra.sweeper.params."):  # Hydra parses a range as a sweep: the space, not a job's value
            params[name[len("hydra.sweeper.params.") :]] = arg.split("=", 1)[1]  # type: ignore[index]
        elif not o.is_sweep_override():
            base.append(arg)
    for key, values in search_space.candidates(params).items():  # type: ignore[arg-type]
        for value in values:
            try:
                composer.compose([*base, f"{key}={value}"])
            except UserError as e:
                raise UserError(
                    f"hydra.sweeper.params.{key}={params[key]}: a trial at {value} would fail: {e.what}"
                ) from None
    composer.compose(base)  # leave the composer's plain config the base one
    return params  # type: ignore[return-value]


def _varied(jobs: list[dict[str, Any]], i: int) -> str:
    """Job i's overrides that are not the same in every job: what a reader needs to tell it apart."""
    common = set.intersection(*(set(j["overrides"]) for j in jobs)) if jobs else set()
    return ",".join(o for o in jobs[i]["overrides"] if o not in common) or ",".join(jobs[i]["overrides"])


def _check_sweep_identity(sweep: RunDir, jobs: list[dict[str, Any]], args: list[str], cfg: DictConfig) -> None:
    """A sweep dir holds one sweep, identified by the ordered list of its jobs. A re-run of the same list resumes
    it; a list that starts with it and adds new, distinct jobs extends it (the old jobs keep their numbers and
    dirs); anything else is refused before Hydra writes."""
    from digits import fingerprint

    before = _stored_jobs(sweep, cfg)
    if before is None:
        return
    ids_before, ids_now = [j["id"] for j in before], [j["id"] for j in jobs]
    if ids_now[: len(ids_before)] == ids_before:
        _check_sweep_data(sweep)
        return
    if len(before) == len(jobs) == 1 and "key" in before[0] and "key" in jobs[0]:  # a search: name what changed
        was, now = before[0], jobs[0]
        diff = fingerprint.first_difference(was["key"], now["key"]) or (
            f"its space was {was.get('summary')}, now {now['summary']}"
        )
        raise UserError(
            f"holds another search ({diff}); re-run that search, or choose another hydra.sweep.dir", sweep.path
        )
    i = next(i for i, (a, b) in enumerate(zip(ids_before, ids_now + [None] * len(ids_before))) if a != b)
    was = _varied(before, i)
    now = _varied(jobs, i) if i < len(jobs) else "nothing"
    raise UserError(
        f"holds a different sweep: its job {i} was {was}, this sweep's is {now}; re-run that sweep, extend it by "
        "appending values to what it sweeps, or choose another hydra.sweep.dir",
        sweep.path,
    )


def _check_sweep_data(sweep: RunDir) -> None:
    """A sweep resumed or extended trains its new jobs on the data its finished ones saw, byte for byte: the
    summary ranks them together and an ensemble averages them. Each folder's files are hashed once."""
    from digits import fingerprint
    from digits.runs import job_dirs

    now: dict[str, dict[str, Any]] = {}
    for job in job_dirs(sweep.path):
        stored = RunDir(job).read_fingerprint()
        if not stored or not stored.get("data"):
            continue
        first = next(iter(stored["data"].values()))
        folder = Path(first["path"]).parent
        key = str(folder)
        if key not in now:
            now[key] = fingerprint.data_identity(folder) if folder.is_dir() else {}
        diff = fingerprint.data_difference(stored["data"], now[key])
        if diff:
            raise UserError(
                f"{diff}, since the sweep's job {job.name} trained on it; a sweep's jobs see the same data, so "
                "start a new sweep (another hydra.sweep.dir) for the new data",
                sweep.path,
            )


def _stored_jobs(sweep: RunDir, cfg: DictConfig) -> list[dict[str, Any]] | None:
    """The jobs a sweep dir was started with: sweep.json, or for an older sweep, its multirun.yaml composed again."""
    import json

    if sweep.sweep_file.is_file():
        try:
            jobs = json.loads(sweep.sweep_file.read_text())["jobs"]
            if isinstance(jobs, list) and all(isinstance(j, dict) and "id" in j for j in jobs):
                return jobs
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise UserError(
            "is damaged (not the sweep.json digits writes); choose another hydra.sweep.dir", sweep.sweep_file
        )
    saved = sweep.path / "multirun.yaml"
    if not saved.is_file():
        return None
    try:
        before = (yaml.safe_load(saved.read_text()) or {}).get("hydra", {}).get("overrides", {}).get("task", [])
        with Composer() as composer:
            return _sweep_jobs([*before], cfg, composer)
    except (yaml.YAMLError, AttributeError, UserError, TypeError):
        raise UserError(
            "holds a sweep whose multirun.yaml cannot be read; choose another hydra.sweep.dir", saved
        ) from None


def _naming(overrides: list[Any], args: list[str]) -> list[str]:
    """Name each job dir after what it varies: every key given one value is left out of Hydra's override_dirname."""
    if any(a.startswith("hydra.job.config.override_dirname.exclude_keys=") for a in args):
        return []
    fixed = sorted({o.key_or_group for o in overrides if not o.is_sweep_override()} - {"hydra"})
    fixed = [k for k in fixed if not k.startswith("hydra")]
    return [f"hydra.job.config.override_dirname.exclude_keys=[{','.join(quote(k) for k in fixed)}]"]


# --- the whole preparation ----------------------------------------------------------------------------------------
@dataclass
class Target:
    """The dir a command writes to, claimed by this process: one run's dir, or a sweep's."""

    dir: RunDir
    sweep: bool

    def done(self) -> None:
        """Give the dir up; a run's dir that got no results is removed (only what this process made)."""
        if self.sweep and any(RunDir(d).holds_results() for d in self.dir.path.iterdir() if d.is_dir()):
            self.dir.release()
        else:
            self.dir.discard()  # a sweep that launched nothing (a refused submission) leaves nothing behind


def prepare(args: list[str]) -> tuple[list[str], Target | None]:
    """Check and complete the arguments for Hydra; claim the target dir. Returns the arguments and the target
    (None for --help, --cfg and the like, which write nothing)."""
    args = expand_resume(args)
    args = flags_first(args)
    args = null_optional_deletions(args)
    show = _shown_part(args)
    if show is None and any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in args):
        return args, None
    if show is not None:  # checked without the --cfg flag and its value, which are no overrides
        shown_args = [
            a for i, a in enumerate(args) if a not in ("--cfg", "-c") and (i == 0 or args[i - 1] not in ("--cfg", "-c"))
        ]
        _compose_command(shown_args, show)
        return args, None
    overrides, cfg, run_plain, multirun, jobs = _compose_command(args)
    target, named = _target(cfg, overrides, multirun)
    check_writable(target)
    run = RunDir(target)
    resume = any(a.startswith("resume=") for a in args)
    kind = "sweep" if multirun else "run"
    if multirun:
        run.check_writable_as(kind)
        _check_sweep_identity(run, jobs, args, cfg)
    elif resume:
        _check_resume(run, run_plain)
    run.claim(kind)
    if not multirun and named and not resume and run.holds_results():
        run.release()  # checked after the claim: a run that finishes here meanwhile has written its results first
        raise UserError(f"already holds a run; resume it with resume={target} or choose another dir", target)
    if multirun and jobs:
        write_json_atomic(run.sweep_file, {"jobs": jobs})  # the same list, or an extension of it
    if multirun and len(jobs) == 1 and "key" in jobs[0]:  # a search: its study must be this search, whatever storage
        from digits import search

        search.COMMAND_IDENTITY = {k: jobs[0][k] for k in ("summary", "key")} | {"digest": jobs[0]["id"]}
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = [a for a in args if not a.startswith(key + "=")] + [f"{key}={quote(str(target))}"]
    if multirun:
        args += _naming(overrides, args)
    return args, Target(run, multirun)


def _compose_command(args: list[str], show: str | None = None) -> tuple[list[Any], DictConfig, Any, bool, list]:
    """Parse and compose the command as Hydra will, checking every job of a sweep; returns (overrides, config,
    resolved config, multirun, jobs). With `show` (--cfg), each job's config is then shown and the process exits:
    Hydra shows one config, not a sweep's, and checks none of them."""
    overrides = parse(args)
    check_choices(overrides)
    sweeps = [o for o in overrides if o.is_sweep_override()]
    given = [a for a in args if not a.startswith("-")]
    plain = [a for a, o in zip(given, overrides) if not o.is_sweep_override()]
    jobs: list[dict[str, Any]] = []
    with Composer(machine=show is None) as composer:
        cfg = composer.compose(plain if sweeps else given)
        run_plain = composer.plain
        multirun = any(a in MULTIRUN_FLAGS for a in args) or str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        if multirun:
            jobs = _sweep_jobs(args, cfg, composer)
            if show is not None:
                _show_jobs(args, cfg, show, composer)
        elif sweeps:
            raise UserError(f"{sweeps[0].input_line}: a list of values needs -m (a sweep)")
        elif not str(cfg.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            chosen = _choice(cfg, "hydra/sweeper") or "search"
            via = f", through experiment={_choice(cfg, 'experiment')}" if _choice(cfg, "experiment") else ""
            raise UserError(
                f"the config chooses a search (hydra/sweeper={chosen}{via}), which runs only as a sweep: add -m"
            )
    return overrides, cfg, run_plain, multirun, jobs


def _choice(cfg: DictConfig, group: str) -> str | None:
    """The choice a composed config made for a group (Hydra's runtime.choices), if it made one."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    return choices.get(group) if choices is not None else None


def _shown_part(args: list[str]) -> str | None:
    """`--cfg job|hydra|all` (or `-c`): which part of the config to show, else None."""
    for i, a in enumerate(args):
        if a in ("--cfg", "-c") and i + 1 < len(args):
            return args[i + 1]
    return None


def _show_jobs(args: list[str], cfg: DictConfig, part: str, composer: Composer) -> None:
    """`--cfg` with -m: Hydra shows one config, not a sweep's; each job's, composed and checked, is shown here."""
    import sys

    hydra_args = [a for a in args if not a.startswith("-") and a.lstrip("+~").startswith("hydra")]
    base = [a for a in args if not a.startswith("-") and a not in hydra_args]  # a search's jobs are not known yet
    for i, job in enumerate(_job_overrides(args, cfg) or [base]):
        composed = composer.compose(job + hydra_args)
        shown = composed if part == "all" else composed.hydra if part == "hydra" else _job_part(composed)
        print(f"# job {i}: {' '.join(job)}\n{OmegaConf.to_yaml(shown)}")
    sys.exit(0)


def _job_part(cfg: DictConfig) -> DictConfig:
    from omegaconf import open_dict

    out = cfg.copy()
    with open_dict(out):
        out.pop("hydra", None)
    return out


def _check_resume(run: RunDir, plain: dict[str, Any]) -> None:
    """A resume continues the run as it started: the same trajectory config, the same data bytes, and a last.ckpt
    that this run wrote (digits.fingerprint). Checked before Hydra writes into the dir."""
    from digits import fingerprint

    stored = run.read_fingerprint()
    if stored is None:  # a run from before fingerprint.json: its last.ckpt still carries the config it trained with
        if run.last_checkpoint.is_file():
            from digits.evaluate import load_checkpoint

            ckpt = load_checkpoint(run.last_checkpoint)
            if isinstance(ckpt.get("digits_config"), dict):
                theirs = fingerprint.trajectory(ckpt["digits_config"])
                fingerprint.check_same_config(theirs, fingerprint.trajectory(plain), run.path)
        return
    data_dir = fingerprint.data_dir_of(plain)
    now = fingerprint.of_run(plain, data_dir if data_dir.is_dir() else None)
    fingerprint.check_same(stored, now, run.path)
    if run.last_checkpoint.is_file():
        from digits.evaluate import load_checkpoint

        fingerprint.check_checkpoint(stored, load_checkpoint(run.last_checkpoint), run.last_checkpoint)
