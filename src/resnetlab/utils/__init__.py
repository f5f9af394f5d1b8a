"""Bottom-layer helpers: errors, seeding, device/precision resolution, timers."""

from resnetlab.utils.device import autocast, resolve_device, resolve_dtype
from resnetlab.utils.errors import UserError
from resnetlab.utils.seed import seed_everything, seeded_generator
from resnetlab.utils.timer import Timer

__all__ = [
    "UserError", "autocast", "resolve_device", "resolve_dtype",
    "seed_everything", "seeded_generator", "Timer",
]
