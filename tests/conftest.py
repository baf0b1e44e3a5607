"""Shared test setup. Keep this small: fixtures used by one file belong in that file.

The real-service fixtures (PostgreSQL, Redis, moto S3, each suite's stack of them) live in the
plugin `real_services`, loaded here. It also marks `services` every test that uses one of them,
directly or through other fixtures, so `pytest -m "not services"` runs everything that needs no
server; a test that reaches a server without the mark fails.
"""

from __future__ import annotations

import torch

pytest_plugins = ["real_services"]

# The core's tests run thousands of tiny tensor ops; intra-op threads only add hand-off latency
# there (about 10x slower on a busy 2-core runner) and make float sums order-dependent.
torch.set_num_threads(1)
