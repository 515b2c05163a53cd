"""Python tools used by the runtime tests (imported by module path, also from a subprocess)."""

import time


def slow_double(x: int, delay: float = 0.05) -> int:
    time.sleep(delay)
    return 2 * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"refusing {x}")
    return x + 1
