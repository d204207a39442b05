import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))

import pytest
import torch


@pytest.fixture
def one_thread():
    "Tiny tensors: one intra-op thread avoids synchronisation costs on a busy 2-core machine (restored afterwards)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
