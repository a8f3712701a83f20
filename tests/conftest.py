import pytest
import torch

from viz.model import load_model


@pytest.fixture(scope="session")
def model():
    """The real oxford weights on CPU, as the engine uses them."""
    return load_model("oxford", "cpu", channels_last=True)


@pytest.fixture(scope="session")
def oxford_state_dict(model):
    return model.weights.state_dict


@pytest.fixture(autouse=True)
def _deterministic_threads():
    yield
    torch.set_grad_enabled(True)
