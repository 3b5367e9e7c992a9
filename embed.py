"""Turn an image folder into the per-class .npy embedding format (ViT-B/16 class-token vectors).

    python embed.py --images DIR --out data/NAME [--weights DIR] [--batch_size 32] [--device cuda|cpu]

DIR/<class>/<stem>.jpg|jpeg|png becomes data/NAME/<class>/<stem>.npy, one float32 vector of shape
(hidden_size,) = (768,): last_hidden_state[:, 0] of transformers.ViTModel with the ImageNet-21k weights
google/vit-base-patch16-224-in21k (the HAGCN paper's), or of a local copy saved with save_pretrained
(--weights DIR). Images whose .npy already exists are skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

DEFAULT_WEIGHTS = "google/vit-base-patch16-224-in21k"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE_RATIO = 256 / 224  # resize the shorter side to 256 and crop 224 (scaled to config.image_size)


class EmbedError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", required=True, help="image folder: DIR/<class>/*.jpg|jpeg|png")
    p.add_argument("--out", required=True, help="output folder, e.g. data/NAME: OUT/<class>/<stem>.npy")
    p.add_argument("--weights", default=None,
                   help=f"local model folder saved by save_pretrained (default: download {DEFAULT_WEIGHTS})")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch_size {args.batch_size}: must be at least 1")
    return args


def list_images(images: Path) -> list[tuple[str, Path]]:
    """(class name, image path) for every DIR/<class>/*.jpg|jpeg|png, sorted; hidden files and folders ignored."""
    if not images.is_dir():
        raise EmbedError(f"--images {images}: no such directory")
    class_dirs = sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise EmbedError(f"--images {images}: no class folders (expected DIR/<class>/<image>.jpg|jpeg|png)")
    found = []
    for d in class_dirs:
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        stems: dict[str, Path] = {}
        for f in files:
            if f.stem in stems:
                raise EmbedError(f"{stems[f.stem]} and {f}: same name, both would be written to {f.stem}.npy")
            stems[f.stem] = f
        if not files:
            print(f"warning: --images {images}: class folder '{d.name}' has no images, skipped", file=sys.stderr)
        found += [(d.name, f) for f in files]
    if not found:
        raise EmbedError(f"--images {images}: no images (.jpg, .jpeg, .png) in its class folders")
    return found


def hub_reachable(model_id: str) -> bool:
    """One request without retries (the hub client retries for ~25 s), so that no network fails in a second."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session
    try:
        get_session().head(hf_hub_url(model_id, "config.json"), timeout=10)
    except Exception:  # offline mode, DNS or connection errors: the exception types vary by huggingface_hub version
        return False
    return True


def load_model(weights: str | None, device: str) -> torch.nn.Module:
    """ViTModel in eval mode from a save_pretrained folder, the local cache, or (last) the Hugging Face hub."""
    try:
        from transformers import ViTModel
    except ImportError:
        raise EmbedError("transformers is not installed: pip install -r requirements-embed.txt") from None
    if weights is not None:
        if not (Path(weights) / "config.json").is_file():
            raise EmbedError(f"--weights {weights}: not a model folder saved by save_pretrained (no config.json)")
        try:
            model = ViTModel.from_pretrained(weights, local_files_only=True)
        except (OSError, ValueError) as e:
            raise EmbedError(f"--weights {weights}: cannot load the model ({str(e).splitlines()[0]})") from None
    else:
        try:
            model = ViTModel.from_pretrained(DEFAULT_WEIGHTS, local_files_only=True)
        except OSError:  # not in the local cache: download it
            advice = "pass --weights DIR with a local copy saved by save_pretrained"
            if not hub_reachable(DEFAULT_WEIGHTS):
                raise EmbedError(f"cannot download {DEFAULT_WEIGHTS} (no network?); {advice}") from None
            try:
                model = ViTModel.from_pretrained(DEFAULT_WEIGHTS)
            except OSError as e:
                raise EmbedError(f"cannot download {DEFAULT_WEIGHTS} ({str(e).splitlines()[0]}); {advice}") from None
    return model.to(device=device, dtype=torch.float32).eval()


def preprocess(path: Path, image_size: int) -> np.ndarray:
    """RGB image -> (3, image_size, image_size) float32: bilinear resize of the shorter side to
    round(256/224 * image_size), centre crop, scale to [0, 1], ImageNet mean/std normalisation."""
    try:
        with Image.open(path) as f:
            im = f.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise EmbedError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    short = round(RESIZE_RATIO * image_size)
    w, h = im.size
    scale = short / min(w, h)
    w, h = round(w * scale), round(h * scale)
    im = im.resize((w, h), Image.BILINEAR)
    left, top = round((w - image_size) / 2), round((h - image_size) / 2)
    im = im.crop((left, top, left + image_size, top + image_size))
    x = np.asarray(im, dtype=np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1).copy()


def embed_batches(model: torch.nn.Module, paths: list[Path], batch_size: int) -> Iterator[np.ndarray]:
    """Class-token embeddings (B, hidden_size) float32, one array per batch of `paths`, in order."""
    device = next(model.parameters()).device
    for start in range(0, len(paths), batch_size):
        batch = np.stack([preprocess(p, model.config.image_size) for p in paths[start:start + batch_size]])
        with torch.no_grad():
            out = model(pixel_values=torch.from_numpy(batch).to(device))
        yield out.last_hidden_state[:, 0].float().cpu().numpy()


def save_atomic(path: Path, vector: np.ndarray) -> None:
    """Write a .npy under a temporary (hidden) name in the same folder, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, vector)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise EmbedError("--device cuda: CUDA is not available (use --device cpu)")
        out = Path(args.out)
        images = list_images(Path(args.images))
        todo = [(src, out / c / f"{src.stem}.npy") for c, src in images]
        todo = [(src, dst) for src, dst in todo if not dst.exists()]
        if todo:
            model = load_model(args.weights, args.device)
            done = 0
            with tqdm(total=len(todo), unit="img", desc="embed") as bar:
                for vectors in embed_batches(model, [src for src, _ in todo], args.batch_size):
                    for (_, dst), v in zip(todo[done:done + len(vectors)], vectors):
                        save_atomic(dst, v)
                    done += len(vectors)
                    bar.update(len(vectors))
    except EmbedError as e:
        print(f"embed.py: error: {e}", file=sys.stderr)
        return 2
    classes = len({c for c, _ in images})
    print(f"embed: {len(todo)} new, {len(images) - len(todo)} already present "
          f"({len(images)} images, {classes} classes) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
