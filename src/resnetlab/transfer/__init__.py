"""Transfer: import the weight files users already have (safely, exactly) and convert them.

``load_pretrained(path)`` builds the network a file was trained as (layout and architecture read
off its content) and loads it; ``load_weights(model, path)`` loads into a model you built;
``convert_weights(src, dst)`` writes the clean safetensors form with metadata.
"""

from resnetlab.transfer.pretrained import (
    build_args_for,
    convert_weights,
    guess_model,
    load_pretrained,
)
from resnetlab.transfer.weights import (
    WeightsFile,
    check_fit,
    detect_layout,
    file_sha256,
    load_weights,
    read_state_dict,
    read_weights,
)

__all__ = [
    "WeightsFile", "read_weights", "read_state_dict", "detect_layout", "check_fit",
    "load_weights", "file_sha256", "guess_model", "build_args_for", "load_pretrained",
    "convert_weights",
]
