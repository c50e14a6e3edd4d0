"""A tiny zoo definition for tests of the build machinery (seconds, not minutes)."""

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
