"""llamaforge's fixes for ColossalAI 0.5.0's collectives, against plain gathers, on 3 ranks
(the ring's 2-rank case is also covered end to end by the sequence-parallel tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_ring_gather_reduce_scatter_and_all_to_all_on_three_ranks(tmp_path):
    worker = Path(__file__).with_name("collectives_worker.py")
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3"),
        *("--standalone", str(worker)),  # a free local port of its own
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r.pop("rank") for r in rows) == [0, 1, 2]
    for row in rows:
        assert row == dict.fromkeys(
            ("ring_output", "ring_gathered_input", "reduce_scatter", "all_to_all"), True
        )
