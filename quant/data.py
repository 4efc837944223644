"""Data sets: sklearn digits (offline), CIFAR-10 and ImageNet from a user's folder.

Digits comes in two variants, both built offline from scikit-learn's images with one split:
``digits`` (the images as they are) and ``digits-vary`` (each image with its own exposure: gain,
contrast and black level drawn once from a fixed seed; see ``digits_vary_split``).

``digits32`` is an offline stand-in for CIFAR-10's image shape, for the CIFAR networks (ResNet-20):
the same digits images and split, each 8x8 pixel repeated as a 4x4 block (32x32) on 3 identical
channels. It is NOT CIFAR-10: an accuracy on it is a digits accuracy (``DIGITS32_LABEL``).

Every loader yields ``(x, y)`` float32 / int64 batches. Training order and augmentation depend only on
``(seed, epoch)``, so a resumed run sees exactly the batches the uninterrupted one would have seen;
under data-parallel training each rank takes every ``world``-th sample of the epoch's permutation.
"""

import math
import pickle
from pathlib import Path

import numpy as np
import torch

from asqhw.errors import UserError

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
# Digits variants, chosen with --data NAME (digits ships with scikit-learn: no folder needed).
DIGITS_VARIANTS = ("digits", "digits-vary")
# digits-vary: per-image exposure, drawn once per sklearn image (in load_digits order) from this seed.
EXPOSURE_SEED = 20240601
EXPOSURE_GAIN_RANGE = (0.1, 1.0)  # log-uniform: a range of 10x in brightness
EXPOSURE_GAMMA_RANGE = (0.5, 2.0)  # log-uniform: contrast curve x ** gamma
EXPOSURE_OFFSET_RANGE = (0.0, 0.3)  # uniform: black level
SENSOR_LEVELS = 255  # the exposed image is stored as 8-bit pixels, v / 255
# Each digits variant's pixels are integers 0 .. this (the model's input coding follows it).
DIGITS_PIXEL_MAX = {"digits": 16, "digits-vary": SENSOR_LEVELS}
# digits32: sklearn's digits at 32x32x3 (nearest-neighbour upsampling keeps the pixels 0..16 integers).
DIGITS32 = "digits32"
DIGITS32_SCALE = 4  # each 8x8 pixel becomes a 4x4 block
DIGITS32_CHANNELS = 3
DIGITS32_PIXEL_MAX = 16
DIGITS32_SHIFT = 4  # training shift: up to one original pixel, as CIFAR's 4-pixel crop
#: How every accuracy on digits32 is labelled, so that no one reads it as a CIFAR-10 figure.
DIGITS32_LABEL = "digits32 (sklearn's 8x8 digits upsampled to 32x32x3; NOT CIFAR-10)"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def digits_variant(data) -> str:
    """The digits variant ``data`` names (None: plain ``digits``); ``UserError`` for another name."""
    variant = "digits" if data is None else str(data)
    if variant not in DIGITS_VARIANTS:
        raise UserError(f"--data {variant!r} is not a digits variant: use one of {', '.join(DIGITS_VARIANTS)}")
    return variant


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The project's one digits split: ``(x_train, y_train, x_test, y_test)``.

    sklearn's ``load_digits()`` (1,797 real 8x8 images, pixels 0..16), stratified, seed 0, 360 test
    images. ``x = pixels / 16`` in [0, 1], float32, shaped (N, 1, 8, 8); labels int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SPLIT_SEED, stratify=y
    )

    def as_tensors(images, labels):
        return torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), torch.from_numpy(labels)

    return (*as_tensors(x_train, y_train), *as_tensors(x_test, y_test))


def upsample_digits(x: torch.Tensor) -> torch.Tensor:
    """Digits images (N, 1, 8, 8) as digits32 images (N, 3, 32, 32).

    Nearest neighbour: each pixel becomes a ``DIGITS32_SCALE`` x ``DIGITS32_SCALE`` block, so the
    pixel values stay the integers ``0 .. 16`` (over 16) and the input coding stays lossless; the
    one channel is repeated on ``DIGITS32_CHANNELS``.
    """
    blocks = x.repeat_interleave(DIGITS32_SCALE, dim=2).repeat_interleave(DIGITS32_SCALE, dim=3)
    return blocks.expand(-1, DIGITS32_CHANNELS, -1, -1).contiguous()


def digits32_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``digits32``: ``digits_split`` (same images, labels, order and split) upsampled to 32x32x3.

    ``x = pixels / 16`` in [0, 1], float32, shaped (N, 3, 32, 32), the three channels equal; labels
    int64. These are digits, not CIFAR-10 (``DIGITS32_LABEL``).
    """
    x_train, y_train, x_test, y_test = digits_split()
    return upsample_digits(x_train), y_train, upsample_digits(x_test), y_test


def digits_exposures(count: int, seed: int = EXPOSURE_SEED) -> dict[str, np.ndarray]:
    """Per-image exposure of ``digits-vary``: ``{"gain", "gamma", "offset"}``, float64 arrays of ``count``.

    Drawn with ``numpy.random.default_rng(seed)`` in this order: gain (log-uniform over
    ``EXPOSURE_GAIN_RANGE``), gamma (log-uniform over ``EXPOSURE_GAMMA_RANGE``), offset (uniform over
    ``EXPOSURE_OFFSET_RANGE``), each a vector of ``count``.
    """
    rng = np.random.default_rng(seed)

    def log_uniform(low, high):
        return np.exp(rng.uniform(np.log(low), np.log(high), count))

    gain = log_uniform(*EXPOSURE_GAIN_RANGE)
    gamma = log_uniform(*EXPOSURE_GAMMA_RANGE)
    offset = rng.uniform(*EXPOSURE_OFFSET_RANGE, count)
    return {"gain": gain, "gamma": gamma, "offset": offset}


def expose(images: np.ndarray, gain, gamma, offset) -> np.ndarray:
    """A camera's view of ``images`` (N, 8, 8) in [0, 1]: ``offset + (1 - offset) * gain * x ** gamma``.

    ``gamma`` bends the contrast, ``gain`` scales the brightness (the exposure), ``offset`` lifts the
    black level; the result stays in [0, 1] and is rounded to 8-bit pixels (``round(255 v) / 255``).
    Parameters are per image (arrays of N) or scalars.
    """
    shape = (-1, 1, 1)
    gain, gamma, offset = (np.reshape(np.asarray(v, dtype=np.float64), shape) for v in (gain, gamma, offset))
    exposed = offset + (1.0 - offset) * gain * np.power(images.astype(np.float64), gamma)
    return (np.floor(exposed * SENSOR_LEVELS + 0.5) / SENSOR_LEVELS).astype(np.float32)


def digits_vary_split(with_exposure: bool = False):
    """``digits-vary``: ``(x_train, y_train, x_test, y_test)`` (+ the test images' exposures).

    Every one of sklearn's 1,797 images (pixels / 16) gets its own exposure from
    ``digits_exposures(1797)`` (fixed seed ``EXPOSURE_SEED``; image i in ``load_digits()`` order gets
    draw i) and is passed through ``expose``. The split is ``digits_split``'s: the same images, in the
    same order, are test images. With ``with_exposure`` a fifth item gives the test images'
    ``{"gain", "gamma", "offset"}`` (numpy arrays in test order).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    exposure = digits_exposures(len(digits.images))
    x = expose(digits.images / 16.0, exposure["gain"], exposure["gamma"], exposure["offset"])
    y = digits.target.astype(np.int64)
    index = np.arange(len(x))
    index_train, index_test = train_test_split(
        index, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    split = tuple(
        torch.from_numpy(np.ascontiguousarray(a))
        for a in (x[index_train][:, None], y[index_train], x[index_test][:, None], y[index_test])
    )
    if with_exposure:
        return (*split, {name: values[index_test] for name, values in exposure.items()})
    return split


def _find_cifar_folder(root: Path) -> Path:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / CIFAR_TEST_FILE).is_file():
            return candidate
    expected = ", ".join((*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE))
    raise UserError(
        f"no CIFAR-10 data under {root}: expected the python version's folder 'cifar-10-batches-py' "
        f"(from cifar-10-python.tar.gz) holding {expected}; pass its path (or its parent) with --data"
    )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(f"CIFAR-10 file {path} is missing: the folder must hold data_batch_1..5 and test_batch")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(
            f"CIFAR-10 file {path} is malformed ({type(err).__name__}: {err}): expected a pickled dict with "
            "b'data' (N x 3072 uint8) and b'labels'; re-extract cifar-10-python.tar.gz"
        ) from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(
            f"CIFAR-10 file {path} is malformed: data has shape {data.shape} and {len(labels)} labels, "
            "expected (N, 3072) and N labels; re-extract cifar-10-python.tar.gz"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"CIFAR-10 file {path} has labels outside 0..9; re-extract cifar-10-python.tar.gz")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the standard ``cifar-10-batches-py`` folder, as uint8 (N, 3, 32, 32) + labels."""
    folder = _find_cifar_folder(Path(root))
    parts = [_read_cifar_batch(folder / name) for name in CIFAR_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(folder / CIFAR_TEST_FILE)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return (torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_test), torch.from_numpy(y_test))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per channel for an (N, C, H, W) batch."""
    mean = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random ``padding``-pixel-shift crop (zero padding) and horizontal flip, per image, on tensors."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1)
    cols = dx.view(n, 1) + torch.arange(w)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols).view(n, 1, 1, w)
    batch = torch.arange(n).view(n, 1, 1, 1)
    channel = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


class TensorLoader:
    """Batches of an in-memory data set, reshuffled (and augmented) per epoch from ``(seed, epoch)``.

    Parameters
    ----------
    x, y : torch.Tensor
        All samples and labels.
    batch_size : int
        Samples per batch on this rank.
    transform : callable or None
        ``transform(x_batch, generator) -> x_batch`` (augmentation and normalisation), or None.
    shuffle : bool
        Permute every epoch (training) or keep the order (evaluation).
    seed, rank, world : int
        Seed of the epoch's permutation; this rank takes samples ``rank::world`` of it.
    drop_last : bool
        Skip a final short batch (training).
    """

    def __init__(self, x, y, batch_size, transform=None, shuffle=False, seed=0, rank=0, world=1, drop_last=False):
        if batch_size < 1:
            raise UserError(f"batch size {batch_size} must be at least 1")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.seed, self.rank, self.world = seed, rank, world
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(n)[self.rank :: self.world]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self._epoch_seed(0)))
        per_rank = n // self.world  # every rank the same number of steps
        return order[self.rank :: self.world][:per_rank]

    def _epoch_seed(self, stream: int) -> int:
        return (self.seed * 1_000_003 + self.epoch) * 4 + stream

    def __len__(self) -> int:
        # The size of this rank's share of _indices(), without drawing the permutation.
        n = len(self.x) // self.world if self.shuffle else len(range(self.rank, len(self.x), self.world))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        indices = self._indices()
        generator = torch.Generator().manual_seed(self._epoch_seed(1 + self.rank))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            x = self.x[batch]
            if self.transform is not None:
                x = self.transform(x, generator)
            yield x, self.y[batch]


def _cifar_train_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return normalize(random_crop_flip(x.float() / 255.0, generator), CIFAR_MEAN, CIFAR_STD)


def _cifar_test_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return normalize(x.float() / 255.0, CIFAR_MEAN, CIFAR_STD)


def _digits_train_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Shift by at most one pixel (zero padding), no flip: a flipped digit is another digit.
    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(8)).view(n, 1, 8, 1)
    cols = (dx.view(n, 1) + torch.arange(8)).view(n, 1, 1, 8)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.zeros(1, 1, 1, 1, dtype=torch.long), rows, cols]


def _digits32_train_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift by up to ``DIGITS32_SHIFT`` pixels with background (0) padding, no flip (a flipped
    digit is another digit). The model normalises its input itself (``CifarResNet``'s ``pixel_max``)."""
    n, _, h, w = x.shape
    pad = DIGITS32_SHIFT
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]


def is_digits32(data) -> bool:
    """Whether ``--data`` names the offline digits32 set (instead of a CIFAR-10 folder)."""
    return data is not None and str(data) == DIGITS32


def data_label(dataset: str, data) -> str:
    """How accuracies of a run on ``dataset`` (a model's, ``quant.models.dataset_of``) with ``--data
    data`` name their data: ``DIGITS32_LABEL`` for digits32, a digits variant's name, or the set."""
    if is_digits32(data):
        return DIGITS32_LABEL
    if dataset == "digits":
        return digits_variant(data)
    return {"cifar10": "CIFAR-10", "imagenet": "ImageNet"}.get(dataset, dataset)


# ---------------------------------------------------------------- ImageNet (ImageFolder layout)


def _pil():
    try:
        from PIL import Image
    except ImportError as err:
        raise UserError("reading ImageNet needs Pillow: pip install 'asq-hw[imagenet]' (or pillow)") from err
    return Image


def scan_image_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``[(file, class index)]`` and the sorted class names of an ImageFolder-style directory."""
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist: expected {root}/<class>/<image>.JPEG")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"ImageNet folder {root} has no class sub-folders: expected {root}/<class>/<image>.JPEG")
    samples = [
        (path, index)
        for index, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise UserError(f"ImageNet folder {root} has class folders but no images ({', '.join(IMAGE_SUFFIXES)})")
    return samples, classes


def _to_tensor(image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _train_image(image, rng: np.random.Generator, size: int):
    """RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) and a random horizontal flip."""
    Image = _pil()
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            break
    else:  # centre crop of the whole image
        w = h = min(width, height)
        left, top = (width - w) // 2, (height - h) // 2
    image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    return image.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def _test_image(image, size: int):
    """Resize the short side to size * 256/224, then centre-crop size x size."""
    Image = _pil()
    short = round(size * 256 / 224)
    width, height = image.size
    scale = short / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageFolderDataset(torch.utils.data.Dataset):
    """ImageFolder-style data set; training augmentation is seeded from ``(seed, epoch, index)``."""

    def __init__(self, root: Path, train: bool, size: int = 224, seed: int = 0):
        self.samples, self.classes = scan_image_folder(root)
        self.train, self.size, self.seed, self.epoch = train, size, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        Image = _pil()
        try:
            with Image.open(path) as image:
                image.load()
                if self.train:
                    rng = np.random.default_rng((self.seed, self.epoch, index))
                    image = _train_image(image, rng, self.size)
                else:
                    image = _test_image(image, self.size)
                x = _to_tensor(image)
        except OSError as err:
            raise UserError(f"cannot read image {path}: {err}; remove or replace the file") from err
        return normalize(x.unsqueeze(0), IMAGENET_MEAN, IMAGENET_STD)[0], label


class FolderLoader:
    """A ``DataLoader`` over an ``ImageFolderDataset`` with the ``TensorLoader`` interface."""

    def __init__(self, dataset, batch_size, shuffle, seed, rank, world, workers, drop_last):
        self.dataset = dataset
        if shuffle:
            self.sampler = torch.utils.data.DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
            )
        else:  # every sample exactly once over all ranks (DistributedSampler would pad)
            self.sampler = list(range(rank, len(dataset), world))
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers, drop_last=drop_last,
            persistent_workers=False,
        )

    def set_epoch(self, epoch: int) -> None:
        self.dataset.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


def _imagenet_split_folder(root: Path, split: str) -> Path:
    folder = root / split
    if not folder.is_dir():
        raise UserError(
            f"ImageNet folder {root} has no '{split}' sub-folder: expected {root}/train/<class>/*.JPEG and "
            f"{root}/val/<class>/*.JPEG (ImageFolder layout)"
        )
    return folder


def make_loaders(dataset: str, data_dir, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 workers: int = 4, eval_batch_size: int | None = None):
    """``(train_loader, test_loader)`` for 'digits', 'cifar10' or 'imagenet'.

    ``batch_size`` is per rank. For digits (it ships with scikit-learn) ``data_dir`` names the variant:
    None or ``"digits"``, or ``"digits-vary"`` (``DIGITS_VARIANTS``). For cifar10, ``data_dir`` is the
    CIFAR-10 folder or ``"digits32"``: the offline digits images at 32x32x3 (``digits32_split``; not
    CIFAR-10), as ``pixels / 16`` (the model normalises them).
    """
    eval_batch_size = eval_batch_size or batch_size
    common = {"seed": seed, "rank": rank, "world": world}
    if dataset == "digits":
        variant = digits_variant(data_dir)
        x_train, y_train, x_test, y_test = digits_split() if variant == "digits" else digits_vary_split()
        train = TensorLoader(x_train, y_train, batch_size, _digits_train_transform, True, drop_last=True, **common)
        return train, TensorLoader(x_test, y_test, eval_batch_size, **common)
    if data_dir is None:
        offline = f" (or --data {DIGITS32}: the digits images at 32x32x3, not CIFAR-10)" if dataset == "cifar10" else ""
        raise UserError(f"the {dataset} data set is not shipped: pass its folder with --data DIR{offline}")
    if dataset == "cifar10" and is_digits32(data_dir):
        x_train, y_train, x_test, y_test = digits32_split()
        train = TensorLoader(x_train, y_train, batch_size, _digits32_train_transform, True, drop_last=True, **common)
        return train, TensorLoader(x_test, y_test, eval_batch_size, **common)
    root = Path(data_dir)
    if dataset == "cifar10":
        x_train, y_train, x_test, y_test = load_cifar10(root)
        train = TensorLoader(x_train, y_train, batch_size, _cifar_train_transform, True, drop_last=True, **common)
        return train, TensorLoader(x_test, y_test, eval_batch_size, _cifar_test_transform, **common)
    if dataset == "imagenet":
        train_set = ImageFolderDataset(_imagenet_split_folder(root, "train"), train=True, seed=seed)
        test_set = ImageFolderDataset(_imagenet_split_folder(root, "val"), train=False)
        if test_set.classes != train_set.classes:
            raise UserError(f"ImageNet folder {root}: train/ and val/ have different class folders")
        train = FolderLoader(train_set, batch_size, True, seed, rank, world, workers, drop_last=True)
        return train, FolderLoader(test_set, eval_batch_size, False, seed, rank, world, workers, drop_last=False)
    raise UserError(f"data set {dataset!r} is unknown: use digits, cifar10 or imagenet")
