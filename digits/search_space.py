"""A search's space, in Hydra's override syntax, read once: as Optuna distributions for the sampler, as the values
at its bounds that are checked against the schema before the first trial (digits.cli_args), and as part of what
makes a study this search (its identity, kept in sweep.json and in the study)."""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from digits.errors import UserError


def _parsed(params: dict[str, str]):
    """Each key of the space with its value parsed as Hydra parses an override (a ChoiceSweep, IntervalSweep,
    RangeSweep or a single value) and whether it is tagged log: what distributions() and candidates() both read."""
    parser = OverridesParser.create()
    for key, value in (params or {}).items():
        if not isinstance(value, str):
            raise UserError(
                f"hydra.sweeper.params.{key}: a search's space is keyed by the whole dotted name; write it as "
                f"hydra.sweeper.params='{{{key}.KEY: interval(LOW, HIGH)}}' or in an experiment file"
            )
        try:
            v = parser.parse_override(f"{key}={value}").value()
        except Exception as e:
            raise UserError(f"hydra.sweeper.params.{key}={value}: not a search range ({_one_line(e)})") from None
        yield key, value, v, "log" in getattr(v, "tags", set())


def distributions(params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The search space in Hydra's override syntax (`lr: tag(log, interval(0.001, 0.3))`, `optim: choice(sgd,
    adam)`, `data.batch_size: range(64, 257, 64)`) as Optuna distributions; single values are fixed overrides."""
    import optuna.distributions as d

    space: dict[str, Any] = {}
    fixed: list[str] = []
    for key, value, v, log_scale in _parsed(params):
        if isinstance(v, ChoiceSweep):
            space[key] = d.CategoricalDistribution([c for c in v.list])
        elif isinstance(v, IntervalSweep):
            ints = isinstance(v.start, int) and isinstance(v.end, int) and not log_scale
            kind = d.IntDistribution if ints else d.FloatDistribution
            space[key] = kind(v.start, v.end, log=log_scale)
        elif isinstance(v, RangeSweep):
            ints = all(isinstance(x, int) for x in (v.start, v.stop, v.step))
            stop = v.stop - v.step  # range() excludes its stop; Optuna's bounds include theirs
            kind = d.IntDistribution if ints else d.FloatDistribution
            space[key] = kind(v.start, stop, step=v.step)
        else:
            fixed.append(f"{key}={value}")
    return space, fixed


def candidates(params: dict[str, str]) -> dict[str, list[Any]]:
    """Every value of the space that a trial can be given at a bound: each choice, each interval's two ends (Optuna's
    bounds include them), a range's first and last step. A space whose bounds all pass the schema of the keys they
    set can only propose configs that pass it (each key's limits are intervals); checked before the first trial,
    where a failure would otherwise show only when a trial draws it, and every trial of a space outside the limits
    would fail."""
    out: dict[str, list[Any]] = {}
    for key, value, v, log_scale in _parsed(params):
        if isinstance(v, ChoiceSweep):
            out[key] = list(v.list)
        elif isinstance(v, IntervalSweep):
            if v.start > v.end or (log_scale and v.start <= 0):
                why = "a log interval needs a low bound above 0" if log_scale else "its low bound is above its high"
                raise UserError(f"hydra.sweeper.params.{key}={value}: {why}")
            out[key] = [v.start, v.end]
        elif isinstance(v, RangeSweep) and all(isinstance(x, int) for x in (v.start, v.stop, v.step)):
            steps = range(v.start, v.stop, v.step)
            if not steps:
                raise UserError(f"hydra.sweeper.params.{key}={value}: the range is empty")
            out[key] = [steps[0], steps[-1]]
        elif isinstance(v, RangeSweep):
            out[key] = [v.start]
        else:
            out[key] = [v]
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def identity(plain: dict[str, Any], params: dict[str, str], direction: str) -> dict[str, Any]:
    """What makes a study this search, the same wherever and however its command is spelled: the resolved base
    config that decides the weights and where its data lies (fingerprint.job_key, as for a sweep's jobs; an
    `${oc.env:...}` is resolved, a relative data.dir made absolute), its space and its direction. n_trials, the
    pruner, the sampler and the storage are how a search runs, not which search it is."""
    from digits.fingerprint import digest, job_key

    key = job_key(plain)
    space = {k: str(v) for k, v in sorted(params.items())}
    key.update({f"search.{k}": v for k, v in space.items()})
    key["search.direction"] = direction
    summary = ", ".join(f"{k}: {v}" for k, v in space.items())[:200]
    return {"digest": digest(key), "summary": summary, "key": key}


def search_identity(params: dict[str, str], direction: str, arguments: list[str]) -> dict[str, Any]:
    """The identity of a search started without digits.cli_args (no resolved config at hand): its space, direction
    and the command's other overrides as text."""
    from digits.fingerprint import digest

    base = sorted(a for a in arguments if not a.lstrip("+~").startswith("hydra"))
    space = {k: str(v) for k, v in sorted(params.items())}
    summary = ", ".join(f"{k}: {v}" for k, v in space.items())[:200]
    return {"digest": digest([space, direction, base]), "summary": summary}


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)
