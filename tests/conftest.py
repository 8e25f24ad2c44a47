import torch

# The suite runs on 2 shared cores: one intra-op thread per test process avoids oversubscription stalls.
torch.set_num_threads(1)


import pytest


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A real CLIPModel folder (tiny, random weights): the encode tests' cheapest real encoder."""
    from tests.support.catalog import make_tiny_clip
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="session")
def catalog(tmp_path_factory):
    """A Dataset of 24 good items plus one of each kind of bad input (read-only: tests must not modify it)."""
    from tests.support.catalog import make_catalog
    root = tmp_path_factory.mktemp("cat")
    make_catalog(root, n=24)
    return root / "dataset"
