"""File-format readers.  Each returns plain NumPy arrays and raises ``DataError`` naming the file.

- :mod:`.idx`: IDX files (MNIST, Fashion-MNIST, KMNIST), gzipped or raw.
- :mod:`.cifar`: CIFAR-10/100, binary version and (through a restricted unpickler) python version.
- :mod:`.image`: image files decoded with Pillow (any mode, resized, decompression bombs refused).
- :mod:`.table`: CSV files as cells, each row with its file line for error messages.
"""

from resnetlab.data.readers.cifar import load_cifar, read_cifar_binary, read_cifar_python
from resnetlab.data.readers.idx import read_idx, read_idx_pair

__all__ = ["load_cifar", "read_cifar_binary", "read_cifar_python", "read_idx", "read_idx_pair"]
