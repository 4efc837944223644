"""Data: the digits split, CIFAR-10 and ImageNet folders written by the tests in the real formats."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from asqhw.errors import UserError
from quant.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DIGITS32_LABEL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    data_label,
    digits32_split,
    digits_split,
    load_cifar10,
    make_loaders,
    random_crop_flip,
)


def test_digits_split_is_fixed_stratified_and_scaled():
    x_train, y_train, x_test, y_test = digits_split()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert 0.0 <= x_train.min().item() and x_train.max().item() == 1.0
    # stratified: each class's share of the test split equals its share of the whole set (+-1)
    digits = load_digits()
    totals = np.bincount(digits.target)
    assert np.all(np.abs(np.bincount(y_test.numpy()) - totals * 360 / 1797) <= 1)
    # every test image is one of sklearn's images / 16, with its label
    flat = {tuple(img.ravel()): int(t) for img, t in zip(digits.images / 16.0, digits.target, strict=True)}
    for img, label in zip(x_test[:20], y_test[:20], strict=True):
        assert flat[tuple(img.numpy().astype(np.float64).ravel())] == label.item()
    # fixed: the same split every call
    again = digits_split()
    assert torch.equal(again[2], x_test) and torch.equal(again[1], y_train)


def _cifar_pixel(index: int, c: int, h: int, w: int) -> int:
    return (index * 11 + c * 7 + h * 3 + w) % 256


def _write_cifar(folder, per_batch=4, broken=None):
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        if name == broken:
            (folder / name).write_bytes(b"not a pickle")
            continue
        indices = range(b * per_batch, (b + 1) * per_batch)
        # the real layout: each row is 1024 red, 1024 green, 1024 blue bytes, rows of 32 pixels
        rows = [[_cifar_pixel(i, c, h, w) for c in range(3) for h in range(32) for w in range(32)] for i in indices]
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in indices],
                 b"data": np.array(rows, dtype=np.uint8), b"filenames": [b"x.png"] * per_batch}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar10_reads_the_real_layout(tmp_path):
    root = tmp_path / "data"
    _write_cifar(root / "cifar-10-batches-py")
    x_train, y_train, x_test, y_test = load_cifar10(root)  # the parent folder works too
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    assert y_train.tolist() == [i % 10 for i in range(20)]
    for i, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (19, 2, 31, 30)]:
        assert x_train[i, c, h, w].item() == _cifar_pixel(i, c, h, w)
    assert x_test[2, 2, 9, 4].item() == _cifar_pixel(22, 2, 9, 4)
    train, test = make_loaders("cifar10", str(root), batch_size=8)
    x, y = next(iter(test))
    expected = (_cifar_pixel(20, 1, 0, 0) / 255 - CIFAR_MEAN[1]) / CIFAR_STD[1]
    assert x.shape == (4, 3, 32, 32) and x[0, 1, 0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert len(train) == 2  # 20 // 8, last partial batch dropped


def test_cifar10_errors_name_the_files(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py.*data_batch_1"):
        load_cifar10(tmp_path)
    folder = _write_cifar(tmp_path / "a")
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_cifar10(folder)
    with pytest.raises(UserError, match="data_batch_2 is malformed"):
        load_cifar10(_write_cifar(tmp_path / "b", broken="data_batch_2"))
    with pytest.raises(UserError, match="--data DIR .or --data digits32: the digits images at 32x32x3, not CIFAR-10"):
        make_loaders("cifar10", None, 8)


def test_digits32_is_the_digits_split_at_32x32x3():
    x_train, y_train, x_test, y_test = digits32_split()
    small = digits_split()
    assert x_train.shape == (1437, 3, 32, 32) and x_test.shape == (360, 3, 32, 32)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    # the same labels in the same order: the digits split, seed and all
    assert torch.equal(y_train, small[1]) and torch.equal(y_test, small[3])
    # every 4x4 block on every channel is one original pixel (pixels / 16 stay exact)
    for big, eight in ((x_train, small[0]), (x_test, small[2])):
        blocks = big.reshape(-1, 3, 8, 4, 8, 4)
        assert torch.equal(blocks, eight.reshape(-1, 1, 8, 1, 8, 1).expand_as(blocks))
    assert torch.equal(torch.unique(x_test * 16), torch.arange(17, dtype=torch.float32))
    # the loaders: the test split as is, training shifted (background 0) and never mirrored
    train, test = make_loaders("cifar10", "digits32", batch_size=32, seed=3)
    assert torch.equal(torch.cat([x for x, _ in test]), x_test)
    train.set_epoch(0)
    x, y = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and len(train) == 1437 // 32
    order = torch.randperm(1437, generator=torch.Generator().manual_seed(train._epoch_seed(0)))
    padded = torch.nn.functional.pad(x_train[order[:32]], (4, 4, 4, 4))
    for i in range(32):
        shifts = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(x[i], c) for c in shifts)
    assert torch.equal(y, y_train[order[:32]])
    assert "NOT CIFAR-10" in DIGITS32_LABEL and data_label("cifar10", "digits32") == DIGITS32_LABEL
    assert data_label("cifar10", "/data/cifar") == "CIFAR-10" and data_label("digits", None) == "digits"


def test_random_crop_flip_is_a_shift_or_mirror_of_the_input():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        candidates = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)
    # the same generator seed gives the same augmentation (resumable); another seed differs
    assert torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(2)))


def _write_imagenet(root):
    colors = {"n01": (255, 0, 0), "n02": (0, 128, 255)}
    for split in ("train", "val"):
        for name, color in colors.items():
            (root / split / name).mkdir(parents=True)
            for j in range(3):
                Image.new("RGB", (40 + 10 * j, 30), color).save(root / split / name / f"img{j}.JPEG", quality=100)
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    return colors


def test_imagenet_folder_loader(tmp_path):
    colors = _write_imagenet(tmp_path)
    train, test = make_loaders("imagenet", str(tmp_path), batch_size=2, workers=0)
    assert len(train) == 3 and len(test) == 3
    xs, ys = zip(*test, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (6, 3, 224, 224) and y.tolist() == [0, 0, 0, 1, 1, 1]
    for label, name in enumerate(sorted(colors)):
        expected = [(colors[name][c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)]
        got = x[y == label].mean(dim=(0, 2, 3)).tolist()
        assert got == pytest.approx(expected, abs=0.05)  # JPEG colour rounding
    tx, ty = next(iter(train))
    assert tx.shape == (2, 3, 224, 224) and set(ty.tolist()) <= {0, 1}


def test_imagenet_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no 'train' sub-folder"):
        make_loaders("imagenet", str(tmp_path), 2)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        make_loaders("imagenet", str(tmp_path), 2)
