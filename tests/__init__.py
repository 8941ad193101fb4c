"""The test suite: one folder per package of pipeline/, stages/ for the stage scripts and the dvc CLI end to
end; fixtures in conftest.py, helpers in support.py."""

import os

# Set before anything imports torch, so that it holds in this process and in every process the tests start
# (stages, dvc and the stages dvc runs): one intra-op thread. The same float sums whatever the machine, and
# no threads spin-waiting for a core while other processes (the tests' own dvc runs in the background, or
# anyone's) keep the cores busy, which made training tests several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
