"""A tiny zoo definition for tests of the build machinery (seconds, not minutes), and a results store
filled by the harness's own commands on the built zoo, for the tests of what the leaderboard shows."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.zoo.config import EvalSizes, LoraSetting, ModelShape, Stage, ZooConfig

TINY = ZooConfig(
    languages=("tel", "uig"),  # one FLORES language with MGSM, one MLiC-Eval language
    shape=ModelShape(vocab_size=1024),
    pretrain=Stage(steps=3, batch_size=2, seq_len=32, lr=1e-3, warmup_steps=1),
    continued=Stage(steps=2, batch_size=2, seq_len=32, lr=1e-3, warmup_steps=1, checkpoints=(1,)),
    sft=Stage(steps=2, batch_size=2, seq_len=320, lr=1e-3, warmup_steps=1),
    lora=LoraSetting(rank=4, alpha=8, stage=Stage(steps=2, batch_size=2, seq_len=320, lr=1e-3, warmup_steps=1,
                                                  prompt_loss_weight=1.0)),
    tokenizer_documents=60,
    eval_sizes=EvalSizes(sib={"train": 5, "dev": 4, "test": 6}, belebele=10, mgsm=7,
                         mlic={"tc": (4, 6), "mrc": (3, 5), "rs": (3, 4), "math": (3, 4)}),
)


@pytest.fixture(scope="session")
def tiny_config() -> ZooConfig:
    return TINY


# ---------------------------------------------------------------- the zoo's own results

# The paper's experiment in small, on the dev split in full (every row measured on the same items, so
# the leaderboard ranks and marks them): Uyghur's and Mongolian's models of every Table 3 family, the
# two-language merge, Uyghur's checkpoint curve and a 2x2 density sweep. The adapters of Dmonte et al.
# on test (8 items per task: their Maintenance view reads test quality), their maintenance experiment
# and their language vectors.
UIG_MODELS = ("base", "sft-flan", "ct-uig", "ctsft-uig-flan", "ctsft-uig-mt", "wavg-uig-flan", "ties-uig-flan",
              "ties-sv-uig-flan", "ties-mvf-uig-flan")
MVF_MODELS = ("base", "sft-flan", "ct-mvf", "ctsft-mvf-flan", "ctsft-mvf-mt", "wavg-mvf-flan", "ties-mvf-flan",
              "ties-sv-mvf-flan", "ties-mvf-uig-flan")
ADAPTERS = ("lora-uig", "lora-comb", "lora-ties", "lora-knots-ties")
SIMILARITY_MODELS = ("lora-tam", "lora-tel", "lora-uig", "lora-comb")
SWEEP_GRID = "models.sft-flan.density: [0.4, 0.8]\nmodels.ct-uig.density: [0.4, 0.8]\n"


@dataclass(frozen=True)
class ZooStore:
    url: str
    home: Path  # the zoo's harness home (its merges and run logs)


def _harness(*argv: str) -> None:
    from harness import cli

    code = cli.main(list(argv))
    assert code == 0, f"harness {' '.join(argv)} exited with {code}"


def _models(ids) -> list[str]:
    return [arg for model in ids for arg in ("--model", model)]


@pytest.fixture(scope="session")
def zoo_store(zoo_home, tmp_path_factory) -> ZooStore:
    """The store the commands above write on the built zoo (a few minutes on 2 cores, once per run)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('zoo-store') / 'results.db'}"
    grid = tmp_path_factory.mktemp("zoo-grid") / "grid.yaml"
    grid.write_text(SWEEP_GRID)
    store = ("--store", url)
    dev = ("--split", "dev", "--backend", "hf", *store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_HOME", str(zoo_home))
        _harness("eval", *_models(UIG_MODELS), "--lang", "uig", *dev)
        _harness("eval", *_models(MVF_MODELS), "--lang", "mvf", *dev)
        _harness("curve", "--model", "ties-uig-flan", *dev)
        _harness("sweep", "--model", "ties-uig-flan", "--grid-file", str(grid), "--no-test", "--backend", "hf", *store)
        _harness("eval", *_models(ADAPTERS), "--lang", "uig", "--split", "test", "--limit", "8", "--backend", "hf", *store)
        _harness("maintain", "--update", "uig", "--factor", "2", *store)
        _harness("analyze", "similarity", *SIMILARITY_MODELS, *store)
    return ZooStore(url, zoo_home)
