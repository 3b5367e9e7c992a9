"""embed.py on a tiny randomly initialised ViT saved with save_pretrained (no model hub is reachable here)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import embed  # noqa: E402

HIDDEN = 32
IMAGE_SIZE = 32


def run_embed(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "embed.py", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=IMAGE_SIZE, patch_size=16, hidden_size=HIDDEN, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    folder = tmp_path_factory.mktemp("tiny_vit")
    transformers.ViTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture()
def images(tmp_path) -> Path:
    """3 classes, 7 images: RGB/grayscale/RGBA, PNG/JPEG (upper-case extension too), non-square sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    specs = {"cat": [("a.png", "RGB", (40, 50)), ("b.JPG", "RGB", (64, 48)), ("c.jpeg", "L", (33, 33))],
             "dog": [("d.png", "RGBA", (50, 40)), ("e.jpg", "RGB", (36, 80))],
             "owl": [("f.PNG", "L", (45, 45)), ("g.png", "RGB", (32, 32))]}
    for cls, files in specs.items():
        (root / cls).mkdir(parents=True)
        for name, mode, (w, h) in files:
            channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
            pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(root / cls / name)
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_preprocess_shape_and_normalisation(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (70, 40), color=128).save(path)
    x = embed.preprocess(path, IMAGE_SIZE)
    assert x.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == np.float32
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x, np.broadcast_to(expected[:, None, None], x.shape), atol=1e-6)


def test_preprocess_centre_crop(tmp_path):
    """A wide image, already at the resize size (shorter side 37 = round(256/224 * 32)): the 32 x 32 crop starts
    at column (112 - 32) / 2 = 40, so it sees black, the white band 41..70, then black."""
    pixels = np.zeros((37, 112, 3), dtype=np.uint8)
    pixels[:, 41:71] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    x = embed.preprocess(tmp_path / "wide.png", IMAGE_SIZE)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = np.empty((3, IMAGE_SIZE, IMAGE_SIZE))
    expected[:] = ((0 - mean) / std)[:, None, None]
    expected[:, :, 1:31] = ((1 - mean) / std)[:, None, None]
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_embed_cli_outputs_and_resume(weights, images, tmp_path):
    out = tmp_path / "out"
    r = run_embed("--images", str(images), "--out", str(out), "--weights", str(weights), "--batch_size", "3",
                  "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "7 new" in r.stdout
    files = {cls: sorted(p.name for p in (out / cls).iterdir()) for cls in ("cat", "dog", "owl")}
    assert files == {"cat": ["a.npy", "b.npy", "c.npy"], "dog": ["d.npy", "e.npy"], "owl": ["f.npy", "g.npy"]}

    model = transformers.ViTModel.from_pretrained(weights).eval()
    for cls, src in embed.list_images(images):
        v = np.load(out / cls / f"{src.stem}.npy")
        assert v.shape == (HIDDEN,) and v.dtype == np.float32 and np.all(np.isfinite(v))
        with torch.no_grad():
            pixels = torch.from_numpy(embed.preprocess(src, IMAGE_SIZE))[None]
            direct = model(pixel_values=pixels).last_hidden_state[0, 0].numpy()
        np.testing.assert_allclose(v, direct, atol=1e-5, rtol=0)

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    r = run_embed("--images", str(images), "--out", str(out), "--weights", str(weights), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "0 new, 7 already present" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == mtimes

    removed = out / "dog" / "e.npy"
    saved = np.load(removed)
    removed.unlink()
    assert embed.main(["--images", str(images), "--out", str(out), "--weights", str(weights),
                       "--device", "cpu"]) == 0
    np.testing.assert_allclose(np.load(removed), saved, atol=1e-5, rtol=0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy") if p != removed} == \
        {p: t for p, t in mtimes.items() if p != removed}
    assert not list(out.rglob(".*")), "temporary files left behind"


def test_corrupt_image_is_named(weights, images, tmp_path):
    bad = images / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    r = run_embed("--images", str(images), "--out", str(tmp_path / "out"), "--weights", str(weights),
                  "--device", "cpu")
    assert r.returncode == 2
    assert str(bad) in r.stderr and "cannot read image" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_images_dir(tmp_path):
    r = run_embed("--images", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "--images" in r.stderr and "no such directory" in r.stderr and "Traceback" not in r.stderr


def test_folder_without_images(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    with pytest.raises(embed.EmbedError, match="no images"):
        embed.list_images(tmp_path / "images")


def test_offline_without_weights_asks_for_weights(images, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}  # empty cache
    r = run_embed("--images", str(images), "--out", str(tmp_path / "out"), "--device", "cpu", env=env)
    assert r.returncode == 2
    assert "cannot download google/vit-base-patch16-224-in21k" in r.stderr and "--weights DIR" in r.stderr
    assert "Traceback" not in r.stderr
