"""Identifiers that must be unique, not secret: job ids, completion ids.

``os.urandom`` costs a system call (~6 us on the VMs measured, two per job on the hot path);
these come from a PRNG seeded from it once per process, and seeded again in a forked child so
that parent and child never share a sequence. Lease tokens and API keys, which must not be
guessed, keep using ``os.urandom``/``secrets``.
"""

from __future__ import annotations

import os
import random

__all__ = ["random_hex"]

_rng = random.Random(os.urandom(16))


def _reseed() -> None:
    _rng.seed(os.urandom(16))


os.register_at_fork(after_in_child=_reseed)


def random_hex(n_bytes: int) -> str:
    """``n_bytes`` random bytes as lowercase hex (``2 * n_bytes`` characters)."""
    return f"{_rng.getrandbits(8 * n_bytes):0{2 * n_bytes}x}"
