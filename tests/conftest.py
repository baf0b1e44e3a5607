"""Shared test setup. Keep this small: fixtures used by one file belong in that file."""

from __future__ import annotations

import torch

# The core's tests run thousands of tiny tensor ops; intra-op threads only add hand-off latency
# there (about 10x slower on a busy 2-core runner) and make float sums order-dependent.
torch.set_num_threads(1)
