"""Running 2-process gloo jobs on the CPU for the distributed tests."""

import os
import shutil
import subprocess
import sys

import pytest
import torch.distributed as dist

needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# torch 2.13's gloo can abort a rank as the process exits ("terminate called without an active
# exception"), with or without trainmedic (seen in 5 of 16 plain 2-rank runs on a loaded 2-core
# machine): such a job is run again, at most twice.
GLOO_EXIT_ABORT = "terminate called without an active exception"


def torchrun(folder, *command, fresh=("out", "run")):
    """``python -m torch.distributed.run --standalone --nproc-per-node 2 COMMAND`` in ``folder``,
    the folders ``fresh`` emptied before each try: the finished process (its return code is 0)."""
    for _ in range(3):
        for name in fresh:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc-per-node", "2", *command], env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300, cwd=folder)
        if proc.returncode == 0 or GLOO_EXIT_ABORT not in proc.stdout + proc.stderr:
            break
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc
