"""Using a trained run: predict images and CSVs, export to ONNX, the drawing demo (through its API and a browser)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FAST, ROOT, font_folder, one_line_error, run_cli
from PIL import Image

from digits.data.csv import load_csv

pytestmark = pytest.mark.precision  # predict, export and the demo recompute a run's softmax


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LeNet trained for a few seconds on typeset digits: (run dir, its data folder)."""
    cwd = tmp_path_factory.mktemp("use")
    data = font_folder(cwd / "fonts")
    run = cwd / "run"
    args = [f"data.dir={data}", "model=lenet", "optim=adam", "lr=0.003", *FAST, f"hydra.run.dir={run}"]
    run_cli([*args, "trainer.max_epochs=8", "trainer.limit_train_batches=null"], cwd=cwd)
    return run, data


def _render(rows: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    """Each 28x28 digit as a photo-like file: dark ink on light paper (some coloured), several sizes, off-centre,
    with margins, as PNG or JPEG."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    papers = [(255, 255, 255), (250, 240, 200), (235, 235, 235)]
    inks = [(0, 0, 0), (20, 30, 140), (60, 60, 60)]
    for i, (row, label) in enumerate(zip(rows, labels)):
        size = int(rng.choice([28, 56, 150, 400]))
        digit = Image.fromarray(255 - row.reshape(28, 28)).resize((size, size), Image.Resampling.BILINEAR)
        k = int(rng.integers(len(papers)))
        w, h = size + int(rng.integers(size // 4, size)), size + int(rng.integers(size // 4, size))
        page = Image.new("RGB", (w, h), papers[k])
        ink = Image.new("RGB", (size, size), inks[k])
        page.paste(
            ink,
            (int(rng.integers(0, w - size)), int(rng.integers(0, h - size))),
            mask=Image.eval(digit, lambda v: 255 - v),
        )
        page.save(folder / f"{i:03d}_{label}.{'png' if i % 2 else 'jpg'}", quality=92)


def test_predict_reads_photos_as_well_as_csv_rows(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = trained
    test = load_csv(data / "test.csv")
    rows = test.images.reshape(len(test), -1)[:200]
    _render(rows, test.labels[:200], tmp_path / "photos")
    subset = tmp_path / "rows.csv"
    frame = pd.DataFrame(rows, columns=[f"pixel{i}" for i in range(784)])
    frame.insert(0, "label", test.labels[:200])
    frame.to_csv(subset, index=False)

    out = run_cli(
        [str(run), str(subset), "--out", str(tmp_path / "rows_pred.csv")], cwd=tmp_path, module="digits.predict"
    ).stdout
    assert "accuracy on the 200 labelled rows" in out
    by_rows = pd.read_csv(tmp_path / "rows_pred.csv")
    acc_rows = float((by_rows["label"] == by_rows["true_label"]).mean())

    run_cli(
        [str(run), str(tmp_path / "photos"), "--out", str(tmp_path / "photo_pred.csv")],
        cwd=tmp_path,
        module="digits.predict",
    )
    by_photo = pd.read_csv(tmp_path / "photo_pred.csv")
    truth = by_photo["input"].str.extract(r"_(\d)\.\w+$")[0].astype(int)
    acc_photos = float((by_photo["label"] == truth).mean())
    assert len(by_photo) == 200 and acc_rows > 0.9
    assert abs(acc_photos - acc_rows) <= 0.01, (acc_photos, acc_rows)
    assert list(by_photo.columns[:5]) == ["input", "label", "probability", "second", "third"]


def test_a_white_on_black_28x28_png_is_read_as_it_is(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from digits.images import load, mnist_style

    _, data = trained
    test = load_csv(data / "test.csv")
    Image.fromarray(test.images[0]).save(tmp_path / "d.png")
    assert np.array_equal(mnist_style(load(tmp_path / "d.png")), test.images[0])  # already MNIST-style


def test_bad_inputs_are_one_line_each_and_the_rest_are_predicted(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = trained
    good = tmp_path / "good.png"
    Image.fromarray(load_csv(data / "test.csv").images[0]).save(good)
    (tmp_path / "not.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "narrow.csv").write_text("label,pixel0\n1,2\n")
    inputs = [tmp_path / "not.png", tmp_path / "empty", tmp_path / "narrow.csv", tmp_path / "missing.png", good]
    proc = run_cli(
        [str(run), *map(str, inputs), "--out", str(tmp_path / "p.csv")],
        cwd=tmp_path,
        module="digits.predict",
        check=False,
    )
    errors = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(errors) == 4 and all(e.startswith("digits: error: ") for e in errors)
    assert "Traceback" not in proc.stderr
    assert pd.read_csv(tmp_path / "p.csv")["input"].tolist() == [str(good)]


@pytest.mark.parametrize("damage", ["no checkpoint", "corrupt checkpoint"])
def test_a_run_dir_it_cannot_use_is_one_line(trained: tuple[Path, Path], tmp_path: Path, damage: str) -> None:
    run, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    ckpts = list((broken / "checkpoints").glob("*.ckpt"))
    for c in ckpts:
        if damage == "no checkpoint":
            c.unlink()
        else:
            c.write_bytes(c.read_bytes()[:500])
    proc = run_cli([str(broken), str(tmp_path)], cwd=tmp_path, module="digits.predict", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert ("has no checkpoint" if damage == "no checkpoint" else "truncated or damaged") in lines[0]


def test_a_checkpoint_may_only_name_our_own_models(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from digits.errors import UserError
    from digits.evaluate import net_from_checkpoint

    run, _ = trained
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["digits_config"]["model"] = {"_target_": "os.system", "command": "echo pwned"}
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="names a model this project does not have"):
        net_from_checkpoint(tmp_path / "evil.ckpt")


def test_onnx_export_agrees_with_pytorch(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    run, data = trained
    out = tmp_path / "digits.onnx"
    proc = run_cli([str(run), "--out", str(out)], cwd=tmp_path, module="digits.export")
    assert "onnxruntime agrees with PyTorch on all" in proc.stdout
    exported = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    test = load_csv(data / "test.csv")
    for n in (1, 7, 400):  # any batch size
        probs = exported.run(None, {"image": test.images[:n, None].astype(np.float32)})[0]
        assert probs.shape == (n, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    pred = pd.read_csv(_predict_csv(run, data, tmp_path))
    assert np.array_equal(probs.argmax(1), pred["label"].to_numpy())
    again = run_cli([str(run), "--out", str(out)], cwd=tmp_path, module="digits.export", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def _predict_csv(run: Path, data: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pred.csv"
    run_cli([str(run), str(data / "test.csv"), "--out", str(out)], cwd=tmp_path, module="digits.predict")
    return out


def test_export_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import importlib.util

    from digits import export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name))
    with pytest.raises(SystemExit) as info:
        export.main(["some/run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and 'pip install -e ".[export]"' in err[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(trained: tuple[Path, Path]):
    run, _ = trained
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "digits.demo", str(run), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    end = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > end:
                proc.kill()
                raise AssertionError(proc.communicate()[0][-3000:]) from None
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_demo_answers_an_upload_and_a_drawing_through_its_api(
    demo: str, trained: tuple[Path, Path], tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file

    run, data = trained
    digits = load_csv(data / "test.csv")
    client = Client(demo, verbose=False)
    for i in range(3):
        photo = tmp_path / f"{i}.png"
        Image.fromarray(255 - digits.images[i]).resize((200, 200)).save(photo)  # dark on white, as a photo
        label, seen = client.predict(handle_file(str(photo)), api_name="/upload")
        want = pd.read_csv(_single(run, photo, tmp_path))["label"][0]
        assert label["label"] == str(want) and len(label["confidences"]) == 10
        assert np.asarray(Image.open(seen)).shape[:2] == (224, 224)  # the 28x28 the model saw, shown large
    # A drawing arrives as the sketch pad's layers and their composite: black strokes on a transparent canvas.
    stroke = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ink = Image.fromarray(np.kron(digits.images[0], np.ones((10, 10), np.uint8)))
    stroke.paste(Image.new("RGBA", (280, 280), (0, 0, 0, 255)), (0, 0), mask=ink)
    stroke.save(tmp_path / "drawn.png")
    value = {"background": None, "layers": [], "composite": handle_file(str(tmp_path / "drawn.png"))}
    label, _ = client.predict(value, api_name="/draw")
    assert label["label"] == str(digits.labels[0])


def _single(run: Path, image: Path, tmp_path: Path) -> Path:
    out = tmp_path / f"{image.stem}.csv"
    run_cli([str(run), str(image), "--out", str(out)], cwd=tmp_path, module="digits.predict")
    return out


@pytest.mark.slow
def test_demo_in_a_real_browser_draws_a_stroke_and_shows_a_label(demo: str, tmp_path: Path) -> None:
    """Debian's chromium, headless, driven by selenium: a mouse stroke on the sketch pad, a label on the page."""
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1200",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_bin))
    try:
        browser.get(demo)
        canvas = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, "#pad canvas"))
        time.sleep(2)
        chain = ActionChains(browser).move_to_element_with_offset(canvas, 0, -60).click_and_hold()
        for _ in range(12):  # a vertical stroke, top to bottom
            chain = chain.move_by_offset(0, 10)
        chain.release().perform()
        label = WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.CSS_SELECTOR, "#probs h2").text.strip() or None
        )
        assert label in {str(d) for d in range(10)}
        browser.save_screenshot(os.environ.get("DIGITS_DEMO_SCREENSHOT", str(tmp_path / "demo.png")))
    finally:
        browser.quit()


def test_predict_writes_under_outputs_by_default_and_never_replaces(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """With no --out, the table goes where every command's outputs go (outputs/ of the working directory), never
    into the working directory itself; a second call gets its own file."""
    run, data = trained
    image = tmp_path / "d.png"
    Image.fromarray(load_csv(data / "test.csv").images[0]).save(image)
    work = tmp_path / "work"
    work.mkdir()
    made = []
    for _ in range(2):
        out = run_cli([str(run), str(image)], cwd=work, module="digits.predict").stdout
        made.append(out.strip().splitlines()[-1].split(" -> ", 1)[1])
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert files == sorted(made) and len(set(made)) == 2
    assert all(f.startswith("outputs/predictions/") and f.endswith(".csv") for f in files)


@pytest.mark.parametrize("status", ["interrupted", "failed", "running", None])
@pytest.mark.parametrize("module", ["digits.predict", "digits.export"])
def test_a_run_that_did_not_finish_is_refused_by_every_tool(
    trained: tuple[Path, Path], tmp_path: Path, status: str | None, module: str
) -> None:
    """Its checkpoints were never tested (an interrupted or killed run's last.ckpt is an epoch's end, not the
    weights a finished run chose): the one owner of 'which weights', evaluate.tested_checkpoint, refuses it."""
    run, data = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "metrics.json").read_text())
    if status is None:
        (copy / "metrics.json").unlink()  # killed with SIGKILL before it recorded anything
    else:
        record.update(status=status, resume="python -m digits.train resume=RUN")
        (copy / "metrics.json").write_text(json.dumps(record))
    args = [str(copy), str(data / "test.csv")] if module == "digits.predict" else [str(copy), "--out", "m.onnx"]
    proc = run_cli(args, cwd=tmp_path, module=module, check=False)
    one_line_error(proc, "did not finish" if status else "has no metrics.json")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "m.onnx").exists()


def test_a_sweep_dir_given_as_a_run_names_its_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name in ("0_lr=0.1", "1_lr=0.2"):
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / ".hydra" / "overrides.yaml").write_text(f"- {name.split('_', 1)[1]}\n")
    proc = run_cli([str(sweep), "x.png"], cwd=tmp_path, module="digits.predict", check=False)
    one_line_error(proc, "is a sweep dir, not a run; name one of its 2 jobs (0_lr=0.1, 1_lr=0.2)")


def test_an_image_too_large_to_read_says_so(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """A PNG whose header says 20000 x 20000: Pillow's decompression-bomb guard, named as what it is."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(tmp_path / "small.png")
    png = bytearray((tmp_path / "small.png").read_bytes())
    ihdr = png.index(b"IHDR")
    png[ihdr + 4 : ihdr + 12] = struct.pack(">II", 20000, 20000)
    png[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr : ihdr + 17])))
    (tmp_path / "huge.png").write_bytes(bytes(png))
    run, _ = trained
    proc = run_cli([str(run), str(tmp_path / "huge.png")], cwd=tmp_path, module="digits.predict", check=False)
    one_line_error(proc, "is too large to read")
