"""The promises of docs/guarantees.md, each held for generated members of its class, not only for listed examples.

Most properties run in-process against the real composition (digits.cli_args.prepare, the schema, RunDir, the
fingerprint, the model registry): no training, so hypothesis can try many members. End-to-end regressions of the
examples that first exposed each class run the real CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import string
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import FAST, make_folder, metrics_of, one_line_error, run_cli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from digits import fingerprint, schema
from digits.cli_args import Composer, prepare
from digits.errors import UserError
from digits.runs import RunDir

SETTINGS = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _prepare(args: list[str], keep: bool = False) -> list[str]:
    """prepare() as the CLI calls it, giving the claimed dir back at once (nothing trains): discarded as a command
    that produced nothing, or kept (`keep`) as if its jobs had run."""
    out, target = prepare(args)
    if target is not None:
        target.dir.release() if keep else target.done()
    return out


# Every leaf of the schema: (full key, field, owning dataclass), for generating members of each class.
GROUP_SCHEMAS = {
    "": schema.TrainConf,
    "data.": schema.DataConf,
    "model.": schema.OriginalConf,
    "optim.": schema.SGDConf,
    "trainer.": schema.TrainerConf,
    "callbacks.early_stopping.": schema.EarlyStoppingConf,
    "callbacks.model_checkpoint.": schema.BestCheckpointConf,
    "callbacks.last_checkpoint.": schema.LastCheckpointConf,
    "callbacks.progress_bar.": schema.ProgressBarConf,
    "logger.tensorboard.": schema.TensorBoardConf,
    "logger.csv.": schema.CSVConf,
    "logger.mlflow.": schema.MLflowConf,
    "paths.": schema.PathsConf,
}
LEAVES = [
    (prefix + f.name, f)
    for prefix, kind in GROUP_SCHEMAS.items()
    for f in dataclasses.fields(kind)
    if not (
        prefix == "" and f.name in ("model", "optim", "scheduler", "data", "trainer", "callbacks", "logger", "paths")
    )
]


def _group_of(key: str) -> list[str]:
    """The choice that puts a key in the config: the loggers besides TensorBoard are chosen, not default."""
    return ["logger=many"] if key.startswith(("logger.csv.", "logger.mlflow.")) else []


REQUIRED = [k for k, f in LEAVES if f.metadata.get("required")] + ["model", "optim", "data", "trainer", "callbacks"]

values = st.one_of(
    st.text(string.ascii_letters + string.digits + "._-/", max_size=8),
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x).replace("inf", "Infinity")),
    st.sampled_from(["null", "true", "false", "''", "[]", "[1]", "[0.9]", "{a: 1}", "-0", "1e309", "${lr}"]),
)


# --- 1. the config that runs is the config that was checked -----------------------------------------------------------
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))  # a compose costs ~30 ms
@given(leaf=st.sampled_from(LEAVES), value=values)
def test_any_value_of_any_key_is_accepted_only_if_the_resolved_config_holds_every_limit(
    in_tmp: Path, leaf: tuple[str, dataclasses.Field], value: str
) -> None:
    """For every typed key of every group and any text: either one UserError, or the resolved config passes every
    limit (validate() raising nothing on it) and no dir is left behind."""
    key, _ = leaf
    try:
        with Composer() as composer:
            composer.compose([*_group_of(key), f"{key}={value}"])
            plain = composer.plain
    except UserError:
        return
    flat = fingerprint.flatten(plain)
    assert key in flat or any(k.startswith(key + ".") for k in flat)
    assert not (in_tmp / "outputs").exists()
    if key in flat:  # accepted: the value that will run holds every limit its field names, by an oracle of its own
        assert _holds(flat[key], dict(leaf[1].metadata)), (key, value, flat[key])


_BOUND = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "lt": lambda v, b: v < b, "le": lambda v, b: v <= b}


def _holds(v: object, limits: dict) -> bool:
    """A value within a schema field's limits, written apart from schema._violation so that a check removed there
    is caught here: choices, list length and items, numeric bounds, and the C int every integer reaches."""
    if "choices" in limits:
        return any(
            v == c and (type(v) is type(c) or isinstance(v, (int, float)) == isinstance(c, (int, float)))
            for c in limits["choices"]
        )
    if v is None:
        return True
    if isinstance(v, list):
        items = {k[len("items_") :]: b for k, b in limits.items() if k.startswith("items_")}
        return ("length" not in limits or len(v) == limits["length"]) and all(_holds(x, items) for x in v)
    bounds = {k: b for k, b in limits.items() if k in _BOUND}
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return not bounds
    if isinstance(v, int) and not ({"le", "lt"} & set(bounds)) and v > 2**31 - 1:
        return False
    if not bounds:
        return True
    return math.isfinite(v) and all(_BOUND[k](v, b) for k, b in bounds.items())


@SETTINGS
@given(leaf=st.sampled_from([k for k, f in LEAVES if "fixed" not in f.metadata]), var=st.sampled_from(["SET", "UNSET"]))
def test_an_interpolated_value_is_checked_after_it_resolves(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, leaf: str, var: str
) -> None:
    """`key=${oc.env:V}`: with V unset, one line naming the key; with V set to text the key's type refuses, one
    line too. Never a traceback, never a run."""
    monkeypatch.setenv("DIGITS_PROBE_SET", "not-a-valid-anything")
    monkeypatch.delenv("DIGITS_PROBE_UNSET", raising=False)
    try:
        with Composer() as composer:
            composer.compose([*_group_of(leaf), f"{leaf}=${{oc.env:DIGITS_PROBE_{var}}}"])
    except UserError as e:
        assert leaf in str(e) or var == "SET", str(e)
        return
    assert var == "SET"  # an unset variable never resolves: only a str key may take the text


@SETTINGS
@given(name=st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True), where=st.sampled_from(list(GROUP_SCHEMAS)))
def test_a_key_the_schema_lacks_is_refused_wherever_it_is_added(in_tmp: Path, name: str, where: str) -> None:
    kind = GROUP_SCHEMAS[where]
    assume(name not in {f.name for f in dataclasses.fields(kind)})
    with pytest.raises(UserError, match=f"unknown key {where}{name}"), Composer() as composer:
        composer.compose([*_group_of(where), f"+{where}{name}=1"])


@pytest.mark.parametrize("key", sorted(set(REQUIRED) | {"lr", "seed", "paths", "data.dir", "trainer.max_epochs"}))
def test_a_required_key_cannot_be_removed(in_tmp: Path, key: str) -> None:
    with pytest.raises(UserError, match=r"(is required|cannot be set|removes)"), Composer() as composer:
        composer.compose([f"~{key}"] + (["data.dir=X"] if key == "data" else []))


@SETTINGS
@given(leaf=st.sampled_from([k for k, _ in LEAVES if "." in k]))
def test_removing_a_member_is_null_where_it_may_be_and_refused_where_required(in_tmp: Path, leaf: str) -> None:
    """`~group.key` as the command line gives it: a member that may be null is gone (the command Hydra gets says
    key=null, and the composed value is null); any other is one line, before anything is written."""
    from digits.cli_args import null_optional_deletions

    args = [*_group_of(leaf), f"~{leaf}"]
    rewritten = null_optional_deletions(args)
    try:
        with Composer() as composer:
            composer.compose(rewritten)
            plain = composer.plain
    except UserError as e:  # required, or null breaks a rule that spans keys (no checkpoint for final_weights=best)
        assert "\n" not in str(e) and not (in_tmp / "outputs").exists()
        return
    assert rewritten[-1] == f"{leaf}=null" and fingerprint.flatten(plain).get(leaf, "absent") in (None, "absent")
    assert leaf not in REQUIRED
    assert not (in_tmp / "outputs").exists()


@pytest.mark.parametrize("key", ["data.dir", "data.root", "resume", "hydra.run.dir"])
def test_an_empty_value_as_from_an_unset_shell_variable_is_refused(in_tmp: Path, key: str) -> None:
    with pytest.raises(UserError, match="empty"):
        _prepare([f"{key}="])
    assert not (in_tmp / "outputs").exists()


@SETTINGS
@given(sub=st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_the_dir_claimed_is_the_resolved_dir(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, sub: str) -> None:
    """hydra.run.dir spelled through an interpolation: the dir checked and claimed is the one Hydra writes to."""
    monkeypatch.setenv("DIGITS_PROBE_ROOT", str(in_tmp / "root"))
    args = _prepare([f"hydra.run.dir=${{oc.env:DIGITS_PROBE_ROOT}}/{sub}"])
    passed = [a for a in args if a.startswith("hydra.run.dir=")]
    assert passed == [f"hydra.run.dir='{in_tmp / 'root' / sub}'"]


# --- 2. cross-field rules ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, expect",
    [
        (["optim.nesterov=true"], "needs optim.momentum > 0"),
        (["optim=adam", "optim.betas=[0.9]"], "must have 2 items"),
        (["scheduler=onecycle", "scheduler.anneal_strategy=foo"], "must be one of linear, cos"),
        (["model.num_classes=5"], "must be one of 10"),
        (["trainer.check_val_every_n_epoch=3"], "early_stopping counts epochs"),
        (["trainer.limit_val_batches=0"], "must be > 0"),
        (["trainer.val_check_interval=0.5"], "validation runs once per epoch"),
        (["trainer.num_nodes=3"], "this launch runs on one node"),
        (["callbacks.model_checkpoint.monitor=val/nope"], "must be one of val/acc"),
        (["callbacks.model_checkpoint.dirpath=/elsewhere"], "cannot be set"),
        (["callbacks.early_stopping.mode=min"], "better when larger"),
        (["callbacks.model_checkpoint=null"], "final_weights=best needs callbacks.model_checkpoint"),
        (["optim.lr=0.5"], "optim.lr cannot be set"),
        (["paths.output_dir=/tmp/x"], "paths.output_dir cannot be set"),
        (["logger.tensorboard.save_dir=/tmp/x"], "logger.tensorboard.save_dir cannot be set"),
        (["logger=csv", "logger.csv.save_dir=/tmp/x"], "logger.csv.save_dir cannot be set"),
        (["logger=mlflow", "logger.mlflow.run_dir=/tmp/x"], "logger.mlflow.run_dir cannot be set"),
        (["trainer.devices=0"], "must be auto, a count >= 1"),
        (["trainer.accelerator=cpu", "trainer.devices=[0,1]"], "needs GPUs"),
        (["trainer.max_time=abc"], "must be DD:HH:MM:SS"),
        (["trainer.limit_train_batches=1.5"], "a fraction must be <= 1.0"),
        (["trainer.strategy=ddp_spawn"], "must be one of auto, ddp"),
        (["trainer.min_epochs=3", "trainer.max_epochs=1"], "is above trainer.max_epochs=1"),
        (["experiment=[best,compare_models]"], "experiment takes one choice"),
        (["experiment=search"], "which runs only as a sweep: add -m"),
        (["hydra/sweeper=search"], "which runs only as a sweep: add -m"),
        (["model.hidden=100000"], "<= 8192"),
        (["model=ann", "model.hidden=[10,99999]"], "each item must be >= 1 and <= 8192"),
        (["model.channels=[32,64,5000]"], "<= 1024"),
    ],
)
def test_combinations_are_refused_in_one_line(in_tmp: Path, overrides: list[str], expect: str) -> None:
    with pytest.raises(UserError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        _prepare(overrides)
    assert not (in_tmp / "outputs").exists()


@SETTINGS
@given(
    leaf=st.sampled_from([k for k, f in LEAVES if "int" in str(f.type) and "choices" not in f.metadata]),
    extra=st.integers(1, 2**40),
)
def test_every_integer_key_fits_the_int_it_reaches(in_tmp: Path, leaf: str, extra: int) -> None:
    """An integer past 2**31 - 1 (or its own larger bound: a seed's 2**32 - 1) in any integer key, a width, a count
    or a seed, is one line naming the key, before anything is allocated or written."""
    with pytest.raises(UserError, match=leaf.replace(".", r"\.")), Composer() as composer:
        limits = _field(leaf).metadata
        value = max(limits.get("le", 0), limits.get("items_le", 0), 2**31 - 1) + extra  # past its own bound too
        composer.compose(
            [*_group_of(leaf), f"{leaf}=[{value}]" if "list" in str(_field(leaf).type) else f"{leaf}={value}"]
        )
    assert not (in_tmp / "outputs").exists()


def _field(key: str) -> dataclasses.Field:
    return dict(LEAVES)[key]


# --- 3. where results may be written ----------------------------------------------------------------------------------
user_files = st.dictionaries(
    st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9_.\-]{0,15}", fullmatch=True).filter(lambda n: n not in (".", "..")),
    st.binary(max_size=64),
    min_size=1,
    max_size=4,
)


def _user_folder(root: Path, files: dict[str, bytes]) -> Path:
    folder = root / f"mine{len(list(root.iterdir()))}"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@SETTINGS
@given(files=user_files, multirun=st.booleans())
def test_a_folder_of_the_users_is_never_written_to(in_tmp: Path, files: dict[str, bytes], multirun: bool) -> None:
    """Any non-empty folder that digits did not make is refused as a run dir or a sweep dir, byte for byte."""
    folder = _user_folder(in_tmp, files)
    before = _snapshot(folder)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    with pytest.raises(UserError, match="digits did not write"):
        _prepare([*(["-m"] if multirun else []), f"{key}={folder}", "seed=0,1" if multirun else "seed=0"])
    assert _snapshot(folder) == before


@SETTINGS
@given(files=user_files)
def test_ensemble_out_is_a_new_or_empty_dir(in_tmp: Path, files: dict[str, bytes]) -> None:
    from digits.ensemble import _output_dir

    folder = _user_folder(in_tmp, files)
    before = _snapshot(folder)
    with pytest.raises(UserError):
        _output_dir(folder)
    assert _snapshot(folder) == before


@pytest.mark.parametrize(
    "first, second", [("run", "sweep"), ("sweep", "run"), ("ensemble", "run"), ("run", "ensemble")]
)
def test_one_kind_of_output_never_goes_into_another_kinds_dir(tmp_path: Path, first: str, second: str) -> None:
    d = RunDir(tmp_path / "d")
    d.claim(first)
    d.release()
    with pytest.raises(UserError, match=f"holds an? {first}, not an? {second}"):
        d.claim(second)


def test_a_file_output_never_replaces_a_file(tmp_path: Path) -> None:
    from digits.runs import free_name, write_new_file

    target = tmp_path / "predictions.csv"
    target.write_text("mine\n")
    with pytest.raises(UserError, match="already exists"):
        write_new_file(target, lambda tmp: tmp.write_text("theirs\n"))
    assert target.read_text() == "mine\n"
    assert free_name(target) == tmp_path / "predictions_1.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]  # no temporary file left


# --- 4. sweep identity ------------------------------------------------------------------------------------------------
lrs = st.lists(st.sampled_from(["0.01", "0.02", "0.05", "0.1", "0.2", "0.5"]), min_size=1, max_size=4)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(first=lrs, second=lrs)
def test_a_sweep_dir_accepts_only_its_own_jobs_or_an_extension_by_new_jobs(
    in_tmp: Path, first: list[str], second: list[str]
) -> None:
    sweep = in_tmp / f"sweep{len(list(in_tmp.iterdir()))}"
    base = ["-m", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]

    def ok(values: list[str]) -> bool:
        try:
            _prepare([*base, f"lr={','.join(values)}"], keep=True)
            return True
        except UserError:
            return False

    distinct = lambda vs: len({float(v) for v in vs}) == len(vs)  # noqa: E731
    assert ok(first) == distinct(first)
    if not distinct(first):
        return
    extends = second[: len(first)] == first and distinct(second)
    assert ok(second) == extends, (first, second)


def test_the_same_values_in_another_order_or_spelling_are_named(in_tmp: Path) -> None:
    sweep = in_tmp / "s"
    base = ["-m", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    _prepare([*base, "lr=0.1,0.01", "optim=sgd,adam"], keep=True)
    with pytest.raises(UserError, match="its job 1 was"):
        _prepare([*base, "optim=sgd,adam", "lr=0.1,0.01"])
    with pytest.raises(UserError, match="are the same run"):
        _prepare(["-m", "lr=0.1,1e-1"])


# --- 5. resume identity -----------------------------------------------------------------------------------------------
def _plain(overrides: list[str]) -> dict:
    with Composer() as composer:
        composer.compose(overrides)
        return composer.plain


BASE_PLAIN = None


@SETTINGS
@given(
    change=st.sampled_from(
        [
            "debug=fast",
            "trainer=ddp",
            "model=lenet",
            "data.batch_size=32",
            "trainer.limit_train_batches=3",
            "optim.momentum=0.5",
            "data.augment=true",
            "seed=3",
            "trainer.max_epochs=7",
            "callbacks.early_stopping.patience=2",
            "final_weights=last",
            "data.split_seed=4",
            "trainer.precision=32-true",
        ]
    )
)
def test_a_resume_with_anything_that_changes_the_weights_names_the_first_difference(in_tmp: Path, change: str) -> None:
    stored = fingerprint.of_run(_plain([]), None)
    now = fingerprint.of_run(_plain([change]), None)
    with pytest.raises(UserError, match=r"must continue the same run, but .*: was"):
        fingerprint.check_same(stored, now, in_tmp)


@pytest.mark.parametrize(
    "change",
    ["trainer.enable_progress_bar=false", "data.eval_batch_size=77", "callbacks.progress_bar=null", "~logger"],
)
def test_a_resume_may_change_what_cannot_change_the_weights(in_tmp: Path, change: str) -> None:
    fingerprint.check_same(fingerprint.of_run(_plain([]), None), fingerprint.of_run(_plain([change]), None), in_tmp)


def test_a_resume_refuses_data_that_changed(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "d", n_train=60, n_test=0, test=None)
    stored = fingerprint.of_run({}, folder)
    (folder / "train.csv").write_text((folder / "train.csv").read_text().replace(",0,", ",1,", 1))
    with pytest.raises(UserError, match=r"train.csv .* has changed"):
        fingerprint.check_same(stored, fingerprint.of_run({}, folder), tmp_path)


# --- 6. a checkpoint never runs code ----------------------------------------------------------------------------------
def _nested(leaf: dict) -> st.SearchStrategy:
    return st.recursive(
        st.just(leaf),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=2),
            st.dictionaries(st.sampled_from("abc"), inner, min_size=1, max_size=2),
        ),
        max_leaves=3,
    )


@SETTINGS
@given(key=st.sampled_from(["dropout", "hidden", "channels", "num_classes", "extra"]), data=st.data())
def test_no_value_in_a_checkpoints_model_config_is_ever_instantiated(
    tmp_path: Path, key: str, data: st.DataObject
) -> None:
    from digits.evaluate import net_from_checkpoint

    marker = tmp_path / "pwned"
    payload = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    value = data.draw(_nested(payload))
    model = {"_target_": "digits.models.original.OriginalCNN", "num_classes": 10, "dropout": 0.25, key: value}
    ckpt = {"state_dict": {}, "digits_config": {"model": model}}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(UserError):
        net_from_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_a_checkpoints_data_config_is_checked_too(tmp_path: Path) -> None:
    from digits.data.datamodule import DigitsDataModule

    with pytest.raises(UserError, match="its data config"):
        DigitsDataModule.of_run({"data": {"dir": {"_target_": "os.getcwd"}}})


# --- end-to-end regressions of the examples that exposed each class ---------------------------------------------------
def test_a_run_dir_spelled_through_an_environment_variable_is_never_run_twice(tmp_path: Path, grid_dir: Path) -> None:
    env_args = [f"data.dir={grid_dir}", *FAST, "model=lenet", "trainer.max_epochs=1", "hydra.run.dir=${oc.env:HOME}/r"]
    home = tmp_path / "home"
    home.mkdir()
    os.environ["HOME"], saved = str(home), os.environ.get("HOME", "")
    try:
        run_cli(env_args, cwd=tmp_path)
        before = _snapshot(home / "r")
        one_line_error(run_cli(env_args, cwd=tmp_path, check=False), "already holds a run")
        assert _snapshot(home / "r") == before
    finally:
        os.environ["HOME"] = saved


@pytest.mark.precision
def test_tools_use_exactly_the_checkpoint_the_run_tested(tmp_path: Path, grid_dir: Path) -> None:
    """final_weights=last without the last-checkpoint callback: the run saves the weights it tested and names that
    file; predict then uses it, not best.ckpt."""
    run = tmp_path / "run"
    run_cli(
        [
            f"data.dir={grid_dir}",
            *FAST,
            "model=lenet",
            "final_weights=last",
            "callbacks.last_checkpoint=null",
            f"hydra.run.dir={run}",
        ],
        cwd=tmp_path,
    )
    from digits.evaluate import tested_checkpoint

    m = metrics_of(run)
    assert m["tested_checkpoint"] == "checkpoints/last.ckpt" and tested_checkpoint(run) == run / m["tested_checkpoint"]


def test_a_data_folder_on_a_read_only_mount_trains(tmp_path: Path) -> None:
    """Kaggle mounts its inputs read-only: the parse cache then goes to the user's cache dir. A real read-only bind
    mount (root ignores chmod)."""
    src = make_folder(tmp_path / "src", n_train=300, n_test=50, test="labelled")
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        assert not os.access(ro, os.W_OK) or subprocess.run(["touch", str(ro / "x")]).returncode != 0
        run_cli(
            [f"data.dir={ro}", *FAST, "model=lenet", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'r'}"],
            cwd=tmp_path,
        )
        assert metrics_of(tmp_path / "r")["status"] == "completed"
        assert sorted(p.name for p in ro.iterdir()) == sorted(p.name for p in src.iterdir())
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_a_setting_lightning_refuses_only_at_fit_time_is_one_line_and_leaves_nothing(
    tmp_path: Path, grid_dir: Path
) -> None:
    proc = run_cli([f"data.dir={grid_dir}", *FAST, "trainer.limit_train_batches=0.0001"], cwd=tmp_path, check=False)
    one_line_error(proc, "the trainer refused the config")
    assert not any(p.is_file() for p in (tmp_path / "outputs").rglob("*"))


def test_nodes_that_will_never_come_are_refused_before_a_dir_exists(tmp_path: Path) -> None:
    one_line_error(run_cli(["trainer.num_nodes=2"], cwd=tmp_path, check=False), "this launch runs on one node")
    assert not (tmp_path / "outputs").exists()


def test_a_resume_with_another_batch_schedule_is_refused_and_changes_nothing(tmp_path: Path, grid_dir: Path) -> None:
    run = tmp_path / "r"
    args = [
        f"data.dir={grid_dir}",
        "model=lenet",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run}",
    ]
    run_cli(args, cwd=tmp_path)
    (run / "metrics.json").unlink()  # as if it had been interrupted
    before = _snapshot(run)
    proc = run_cli([f"resume={run}", "debug=fast"], cwd=tmp_path, check=False)
    one_line_error(proc, "must continue the same run, but data.batch_size: was null, now 64")
    assert _snapshot(run) == before
    proc = run_cli([f"resume={run}", "trainer.enable_progress_bar=false"], cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["sgd", "adam", "x y"]),
    st.lists(st.integers(0, 3), max_size=2),
)
_CONFIGS = st.dictionaries(st.sampled_from(["a", "b.c", "b.d", "lr", "optim.name"]), _VALUES, max_size=5)
_FILES = st.dictionaries(
    st.sampled_from(["train.csv", "test.csv"]),
    st.fixed_dictionaries({"path": st.sampled_from(["/d/x.csv", "/e/x.csv"]), "sha256": st.sampled_from(["aa", "bb"])}),
)


def _shown(v: object) -> str:
    return "null" if v is None else json.dumps(v) if isinstance(v, list) else str(v)


@settings(max_examples=300, deadline=None)
@given(was=_CONFIGS, now=_CONFIGS, was_data=_FILES, now_data=_FILES)
def test_the_first_difference_named_is_the_first_key_that_differs_present_or_absent(
    was: dict, now: dict, was_data: dict, now_data: dict
) -> None:
    """A refusal names the first key (in sorted order) whose value differs, a key on one side only included, with
    both values as the user wrote them; then the first data file added, gone or changed; and the run's digest
    changes exactly when its trajectory does."""
    keys = sorted(k for k in set(was) | set(now) if was.get(k, "<absent>") != now.get(k, "<absent>"))
    got = fingerprint.first_difference(was, now)
    if not keys:
        assert got is None
    else:
        k = keys[0]
        want = (
            f"{k}: was {_shown(was[k]) if k in was else '<absent>'}, now {_shown(now[k]) if k in now else '<absent>'}"
        )
        assert got == want
    names = sorted(
        n
        for n in set(was_data) | set(now_data)
        if was_data.get(n) is None or now_data.get(n) is None or was_data[n]["sha256"] != now_data[n]["sha256"]
    )
    got = fingerprint.data_difference(was_data, now_data)
    if not names:
        assert got is None
    elif names[0] not in was_data:
        assert got == f"data file {names[0]}: added"
    elif names[0] not in now_data:
        assert got == f"data file {names[0]}: gone"
    else:
        assert got == f"data file {names[0]} ({now_data[names[0]]['path']}) has changed since the run started"
    a = fingerprint.of_run({"optim": {"lr": 0.1}, **{k.replace(".", "_"): v for k, v in was.items()}}, None)
    b = fingerprint.of_run({"optim": {"lr": 0.1}, **{k.replace(".", "_"): v for k, v in now.items()}}, None)
    same = json.dumps(a["config"], sort_keys=True) == json.dumps(b["config"], sort_keys=True)  # 0 is not false
    assert (a["digest"] == b["digest"]) == same


@settings(max_examples=100, deadline=None)
@given(
    folder=st.sampled_from([None, "", "d1", "/abs/d2"]),
    root=st.sampled_from([None, "", "r1", "/abs/r2"]),
    lr=st.sampled_from([0.1, 0.2]),
)
def test_a_job_is_identified_by_where_its_data_lies_dir_before_root(folder, root, lr) -> None:
    """data.dir, else data.root, else the embedded MNIST: made absolute for a sweep job's key, and the folder whose
    bytes a run fingerprints; data.dir and data.root are not in the trajectory (the bytes stand for them)."""
    from pathlib import Path

    from digits.cache import mnist_root

    plain = {"optim": {"lr": lr}, "data": {"dir": folder, "root": root, "batch_size": 32}}
    where = folder or root
    key = fingerprint.job_key(plain)
    assert key["data.location"] == (str(Path(where).absolute()) if where else None)
    assert key["optim.lr"] == lr and key["data.batch_size"] == 32 and "data.dir" not in key and "data.root" not in key
    assert fingerprint.data_dir_of(plain) == Path(where or mnist_root())


def test_a_runs_data_identity_names_each_file_by_its_real_path_and_bytes(tmp_path: Path) -> None:
    import hashlib

    folder = make_folder(tmp_path / "d", n_train=20, n_test=5, test="labelled")
    link = tmp_path / "link"
    link.symlink_to(folder)
    got = fingerprint.data_identity(link)
    assert sorted(got) == ["test.csv", "train.csv"]
    for name, entry in got.items():
        assert entry == {
            "path": str(folder.resolve() / name),
            "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
        }


@settings(max_examples=200, deadline=None)
@given(was=_CONFIGS, now=_CONFIGS, data=_FILES, filled=st.sets(st.sampled_from(fingerprint.FILLED)))
def test_a_resume_and_a_checkpoint_are_refused_exactly_when_their_run_differs(
    was: dict, now: dict, data: dict, filled: set
) -> None:
    """check_same: refused, naming the first difference and the run dir, when the config differs, whatever the data;
    when it does not, refused exactly when the data does. check_checkpoint: a checkpoint of this run (its digest) or
    one from before digests is resumed; another run's is refused naming what differs. check_same_config: what the run
    filled in itself counts only where the resume names a value."""
    from pathlib import Path

    from digits.errors import UserError

    where = Path("/runs/r")
    stored = {"digest": "d1", "config": was, "data": data}
    diff = fingerprint.first_difference(was, now)
    if diff:
        with pytest.raises(UserError) as e:
            fingerprint.check_same(stored, {"config": now, "data": data}, where)
        assert e.value.file == str(where) and diff in str(e.value) and e.value.what.startswith("a resume must")
    else:
        fingerprint.check_same(stored, {"config": now, "data": data}, where)
    changed = {k: {**v, "sha256": v["sha256"] + "x"} for k, v in data.items()}
    if data and not fingerprint.first_difference(was, now):
        with pytest.raises(UserError, match="has changed since the run started"):
            fingerprint.check_same(stored, {"config": now, "data": changed}, where)

    fingerprint.check_checkpoint(stored, {"digits_fingerprint": "d1"}, where)
    fingerprint.check_checkpoint(stored, {}, where)  # written before checkpoints carried a digest
    with pytest.raises(UserError, match="was written by another run") as e:
        fingerprint.check_checkpoint(stored, {"digits_fingerprint": "d2", "digits_config": {}}, where / "last.ckpt")
    assert e.value.file == str(where / "last.ckpt")
    assert f"({fingerprint.first_difference(was, {}) or 'other data'})" in str(e.value)  # what differs, or the data

    was_f = {**was, **{k: 1 for k in filled}}
    now_f = {**now, **{k: None for k in filled}}  # the resume leaves them to the run: not compared
    if fingerprint.first_difference(was, now):
        with pytest.raises(UserError, match=r"from its last\.ckpt") as e:
            fingerprint.check_same_config(was_f, now_f, where)
        assert e.value.file == str(where)
    else:
        fingerprint.check_same_config(was_f, now_f, where)
        if filled:
            with pytest.raises(UserError, match=r"from its last\.ckpt"):
                fingerprint.check_same_config(was_f, {**now, **{k: 2 for k in filled}}, where)


def test_a_digest_is_stable_across_versions_and_blind_to_key_order() -> None:
    """Every run dir stores its digest (fingerprint.json, its checkpoints): the same config must give the same 16 hex
    digits in every later version of the project, whatever the order its keys were built in, paths as their text."""
    import hashlib
    from pathlib import Path

    canonical = b'{"optim.lr": 0.1, "seed": 0}'  # JSON, keys sorted, the first 16 hex digits of its sha256
    assert fingerprint.digest({"optim.lr": 0.1, "seed": 0}) == hashlib.sha256(canonical).hexdigest()[:16]
    assert fingerprint.digest({"seed": 0, "optim.lr": 0.1}) == fingerprint.digest({"optim.lr": 0.1, "seed": 0})
    assert fingerprint.digest([Path("/d/train.csv")]) == fingerprint.digest(["/d/train.csv"])
