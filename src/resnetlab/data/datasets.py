"""Named data sets: where their files are found, and the official sources to download them from.

``fashion-mnist``, ``mnist``, ``kmnist``, ``cifar10`` and ``cifar100`` are looked up, in order, in
``--data-dir``, ``$RESNETLAB_DATA``, the Debian package location (``dataset-fashion-mnist``
installs ``/usr/share/datasets/fashion-mnist``), the download cache, and finally downloaded from
the official source and verified by checksum.  Inside a folder the files may sit directly, in a
sub-folder named after the data set, or in torchvision's layout (``FashionMNIST/raw``).  With
``download=False`` or ``RESNETLAB_OFFLINE=1`` nothing touches the network.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import logging
import os
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnetlab.data.readers.cifar import CIFAR_LAYOUTS, find_cifar_folder, load_cifar
from resnetlab.data.readers.idx import read_idx_pair
from resnetlab.utils.errors import ConfigError, DataError

__all__ = ["DatasetInfo", "DATASETS", "NamedData", "dataset_info", "list_datasets", "locate",
           "load_named", "download"]

log = logging.getLogger(__name__)

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class DatasetInfo:
    """One named data set: its classes, default augmentation and official files (name -> MD5)."""

    name: str
    format: str  # "idx" or "cifar"
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    files: dict[str, str] = field(hash=False)
    folders: tuple[str, ...]  # sub-folders of a data root that may hold the files
    augment: str
    debian_dir: str | None = None
    debian_package: str | None = None
    # ``progressive_sizes: default``: the input sizes of the data's own progressive-resizing
    # schedule (empty: every step at full size); measured for the main job only (issue 25)
    progressive: tuple[int, ...] = ()
    # ``train.late_freeze: default``: from this fraction of the steps on the stem and first
    # stage train frozen (None: never); measured for the main job only (issue 25)
    late_freeze: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl
boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach
couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())

# Official sources and the MD5 sums their maintainers publish.  The MNIST family is 28x28 grey:
# a 2 px translation; Fashion-MNIST garments are mirror-symmetric, digits and kana are not.
# CIFAR: 4 px translation + flip (He et al. 2016, Sec. 4.2).
DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "idx",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        # flip only: the main job's measured choice (recipes/default.yaml: the 2-pixel crop
        # costs 0.6 points in a 6-7 epoch budget)
        ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"), "flip",
        DEBIAN_FASHION_MNIST, "dataset-fashion-mnist", progressive=(20, 24, 28),
        late_freeze=0.67),
    "mnist": DatasetInfo(
        "mnist", "idx", tuple("0123456789"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        ("mnist", "MNIST/raw"), "crop:2"),
    "kmnist": DatasetInfo(
        "kmnist", "idx", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
         "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
         "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
         "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"},
        ("kmnist", "KMNIST/raw"), "crop:2"),
    "cifar10": DatasetInfo(
        "cifar10", "cifar",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        ("cifar10", "cifar-10", "CIFAR10"), "crop:4,flip"),
    "cifar100": DatasetInfo(
        "cifar100", "cifar", _CIFAR100_CLASSES,
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"},
        ("cifar100", "cifar-100", "CIFAR100"), "crop:4,flip"),
}


def list_datasets() -> list[str]:
    """Names accepted by ``build_data`` besides ``folder:PATH`` and ``csv:PATH``."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The table entry for ``name``; an unknown name lists the choices."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(f"data set {name!r} is unknown; {hint}choose one of "
                          f"{', '.join(list_datasets())}, folder:PATH or csv:PATH")
    return DATASETS[name]


def _idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (``.gz`` or raw; ``-idx`` or ``.idx`` spelling)."""
    found = []
    for base in _IDX_FILES:
        names = [base + ".gz", base, base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"]
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def _holds(info: DatasetInfo, folder: Path) -> bool:
    if info.format == "idx":
        return _idx_files(folder) is not None
    return find_cifar_folder(folder, info.num_classes) is not None


def download_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Where a download goes: ``--data-dir/<name>``, ``$RESNETLAB_DATA/<name>``, or the user cache."""
    if data_dir is not None:
        return Path(data_dir) / name
    if os.environ.get("RESNETLAB_DATA"):
        return Path(os.environ["RESNETLAB_DATA"]) / name
    return _user_cache(name)


def _user_cache(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "resnetlab" / "data" / name


def _places(info: DatasetInfo, data_dir: str | Path | None) -> list[tuple[str, list[Path]]]:
    """(description for the error message, folders to try) in lookup order."""
    places = []
    roots = [("--data-dir", data_dir), ("$RESNETLAB_DATA", os.environ.get("RESNETLAB_DATA"))]
    for flag, root in roots:
        if root:
            root = Path(root).expanduser()
            places.append((f"{flag} {root}", [root / f for f in info.folders] + [root]))
    if info.debian_dir:
        places.append((f"{info.debian_dir} (Debian package {info.debian_package})",
                       [Path(info.debian_dir)]))
    cache = _user_cache(info.name)
    places.append((f"the download cache {cache}", [cache]))
    return places


class DownloadError(Exception):
    """A download that failed or did not match its checksum (wrapped into ``DataError``)."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # the checksum the maintainers publish
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(mirrors: tuple[str, ...], filename: str, md5: str, dest: Path) -> None:
    """Download ``filename`` from the first mirror that works into ``dest``, verifying ``md5``."""
    errors = []
    for base in mirrors:
        url, part = base + filename, dest.with_name(dest.name + ".part")
        try:
            log.info("downloading %s", url)
            # 10 s connect/read timeout: offline machines fail fast instead of hanging
            with urllib.request.urlopen(url, timeout=10) as resp, open(part, "wb") as out:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            if _md5(part) != md5:
                raise DownloadError(f"{url}: MD5 {_md5(part)} does not match {md5}")
            os.replace(part, dest)
            return
        except (OSError, http.client.HTTPException, DownloadError) as err:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
    raise DownloadError("; ".join(errors))


def _extract(info: DatasetInfo, archive: Path, dest: Path) -> None:
    """Extract only the regular files of the expected batch folder (no links, no ``..``)."""
    layout = CIFAR_LAYOUTS[info.num_classes]["binary"]
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.startswith(layout["dir"] + "/")]
            tar.extractall(dest, members=members, filter="data")
    except (OSError, tarfile.TarError, EOFError) as err:
        raise DataError(f"{archive}: cannot extract ({err}); delete it and download again") from None


def download(name: str, dest: str | Path) -> Path:
    """Download (and for CIFAR extract) the official files of ``name`` into ``dest``."""
    info, dest = dataset_info(name), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for filename, md5 in info.files.items():
        target = dest / filename
        if not (target.is_file() and _md5(target) == md5):
            _fetch(info.mirrors, filename, md5, target)
        if info.format == "cifar":
            _extract(info, target, dest)
    return dest


def _offline() -> bool:
    return os.environ.get("RESNETLAB_OFFLINE", "").lower() not in ("", "0", "false", "no")


def _archive_in(info: DatasetInfo, folders: list[Path]) -> Path | None:
    """A folder holding the official CIFAR archive, verified and extracted in place."""
    for folder in folders:
        for filename, md5 in info.files.items():
            archive = folder / filename
            if info.format == "cifar" and archive.is_file() and os.access(folder, os.W_OK):
                if _md5(archive) != md5:
                    raise DataError(f"{archive}: MD5 does not match the official {md5}; the file "
                                    "is corrupt or another version, delete it and download again")
                _extract(info, archive, folder)
                return folder
    return None


def _fix_hint(info: DatasetInfo) -> str:
    files = ", ".join(info.files)
    hint = f"put {files} (from {info.mirrors[0]}) in DIR and pass --data-dir DIR or set RESNETLAB_DATA"
    if info.debian_package:
        hint = f"run `sudo apt-get install {info.debian_package}`, or {hint}"
    return hint


def locate(name: str, data_dir: str | Path | None = None, *, download_ok: bool = True) -> Path:
    """The folder holding ``name``'s files; downloads them as the last resort.

    Raises one ``DataError`` listing every place looked in and how to fix it.
    """
    info = dataset_info(name)
    looked = []
    for label, folders in _places(info, data_dir):
        hit = next((f for f in folders if _holds(info, f)), None) or _archive_in(info, folders)
        if hit is not None:
            return hit
        looked.append(label)
    if not download_ok or _offline():
        why = "download disabled (offline: download=False or RESNETLAB_OFFLINE=1)"
    else:
        target = download_dir(name, data_dir)
        try:
            return download(name, target)
        except (DownloadError, OSError) as err:
            why = f"download into {target} failed ({err})"
    raise DataError(f"{name}: data not found; looked in {'; '.join(looked)}; {why}. "
                    f"To fix: {_fix_hint(info)}")


@dataclass
class NamedData:
    """A named data set in memory: uint8 ``(N, C, H, W)`` images and int64 labels."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: list[str]
    folder: Path


def load_named(name: str, data_dir: str | Path | None = None, *,
               download_ok: bool = True) -> NamedData:
    """Locate and read a named data set (train and test splits as published)."""
    info = dataset_info(name)
    folder = locate(name, data_dir, download_ok=download_ok)
    if info.format == "idx":
        files = _idx_files(folder)
        assert files is not None
        splits = [read_idx_pair(files[i], files[i + 1], num_classes=info.num_classes)
                  for i in (0, 2)]
        train, test = [(x[:, None], y) for x, y in splits]  # add the channel axis
        return NamedData(train, test, list(info.classes), folder)
    data = load_cifar(folder, info.num_classes)
    return NamedData(data["train"], data["test"], data["classes"] or list(info.classes), folder)
