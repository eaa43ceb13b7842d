"""The batch run's allocator settings (serving.memory): freed block memory is reused.

Each case runs in a new interpreter: the settings are process-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Twenty "blocks", each allocating and freeing four 2.4 MB NumPy arrays (a block's
# temporaries are of that size), every page written; reports the minor page faults taken
# after the first block.
_PROBE = """
import json, resource, sys
import numpy as np
settings = {}
if sys.argv[1] == "tuned":
    from stepdown_ml.serving.memory import tune_for_batch
    settings = tune_for_batch()

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

for block in range(20):
    if block == 1:
        start = faults()
    arrays = [np.ones(300_000) for _ in range(4)]
    del arrays
print(json.dumps({"faults": faults() - start, "settings": settings}))
"""


def _blocks(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_block_memory_is_reused_without_page_faults() -> None:
    default, tuned = _blocks("default"), _blocks("tuned")
    assert tuned["settings"] == {"arrow_pool": "jemalloc", "glibc": True}
    # 19 blocks of 4 x 586 pages: by default glibc maps the arrays on their own or trims
    # them off its heap once freed, and every block faults its pages in again (about
    # 44,000 here); with the settings, the first block's memory serves all the others.
    assert default["faults"] > 10_000
    assert tuned["faults"] < 500
