"""The SLURM profile on a real SLURM (marked `slurm`; `make test-slurm`, run by CI): a one-node
cluster on localhost, the smoke pipeline submitted through workflow/profiles/slurm, and outputs
byte-identical to a local run. Needs root and apt-get; CI sets FGSD_REQUIRE_SLURM=1 so that a
machine without them fails instead of skipping."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slurm
def test_smoke_pipeline_through_the_slurm_profile_equals_a_local_run(tmp_path):
    missing = [why for cond, why in ((os.geteuid() == 0, "root"), (shutil.which("apt-get") or shutil.which("slurmctld"),
                                                                    "apt-get or slurm-wlm")) if not cond]
    if missing:
        if os.environ.get("FGSD_REQUIRE_SLURM"):
            pytest.fail(f"the SLURM check needs {' and '.join(missing)}")
        pytest.skip(f"needs {' and '.join(missing)}")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("OMP_NUM_THREADS", None)  # conftest pins 1 thread for in-process tests; jobs use the machine
    proc = subprocess.run(["bash", str(ROOT / "workflow/scripts/slurm_check.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS: the SLURM run equals the local run" in proc.stdout
    submitted = int(re.search(r"jobs submitted through sbatch: (\d+)", proc.stdout).group(1))
    states = (tmp_path / "states.txt").read_text().split()[1::2]
    assert submitted >= 20 and len(states) == submitted and set(states) == {"COMPLETED"}
