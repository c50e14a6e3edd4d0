import pytest


@pytest.fixture
def grid_2x2(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("models.sft-flan.density: [0.2, 0.8]\nmodels.ct-uig.density: [0.4, 1.0]\n")
    return path
