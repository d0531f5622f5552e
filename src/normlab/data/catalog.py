"""What each dataset is: shape, classes, files, checksums and where to download it.

Plain values only, so the model builder can ask for a shape without loading any data.
"""

from __future__ import annotations

from ..errors import UserError
from .info import DatasetInfo, RemoteFile


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"

DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10", title="CIFAR-10", format="cifar", shape=(3, 32, 32),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        train_size=50000, test_size=10000,
        folders=("", CIFAR_FOLDER, "cifar10", "cifar-10", "CIFAR10"),
        system_dirs=("/usr/share/datasets/cifar10", "/usr/share/datasets/cifar-10"),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        remote=(RemoteFile(CIFAR_ARCHIVE, "c58f30108f718f92721af3b95e74349a"),),
        how_to_get="download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and pass its folder with --data-dir",
    ),
    "mnist": DatasetInfo(
        name="mnist", title="MNIST", format="idx", shape=(1, 28, 28),
        classes=tuple(str(d) for d in range(10)),
        mean=(0.1307,), std=(0.3081,),
        train_size=60000, test_size=10000,
        folders=("", "mnist", "MNIST/raw", "MNIST"),
        system_dirs=("/usr/share/datasets/mnist",),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        remote=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        how_to_get="put the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ in a folder and pass it with --data-dir",
        test_class_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", title="Fashion-MNIST", format="idx", shape=(1, 28, 28),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=(0.2860,), std=(0.3530,),
        train_size=60000, test_size=10000,
        folders=("", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        remote=(
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        how_to_get="on Debian or Ubuntu run `apt-get install dataset-fashion-mnist`, or pass a folder holding the four *-ubyte.gz files with --data-dir",
        test_class_counts=(1000,) * 10,
    ),
}
ALIASES = {"cifar": "cifar10", "cifar-10": "cifar10", "fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist",
           "fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}


def dataset_info(name: str) -> DatasetInfo:
    """A catalog dataset by name, or your own images by path (a folder or an .npz; see own.py)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in DATASETS:
        return DATASETS[key]
    from .own import is_own, own_info   # here: own.py builds on this module
    if is_own(name):
        return own_info(name)
    raise UserError(f"unknown dataset {name!r}", f"choose one of {', '.join(DATASETS)}, or pass a folder of images or an .npz file")
