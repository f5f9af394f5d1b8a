"""Thin commands: parse -> build -> call the library -> print."""

import time

# When the command started (before torch is imported): ``resnetlab train --time-budget``
# counts the whole process from here.
STARTED = time.perf_counter()
