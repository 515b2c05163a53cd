"""Python tools for bench/crash_resume.py (imported by module path from `halo run` subprocesses)."""

import os
import time


def slow_double(x: int, delay: float = 0.02) -> int:
    time.sleep(delay)
    return 2 * x


def append_line(path: str, row: int, after: int = 0) -> int:
    """A side effect outside any database: append the row number to a file, durably."""
    with open(path, "a") as f:
        f.write(f"{row}\n")
        f.flush()
        os.fsync(f.fileno())
    return row
