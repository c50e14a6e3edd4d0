"""Training the zoo's LoRA adapters (the paper's INDV and COMB) with PEFT over `base`.

An adapter trains on task data, like `ctsft-<lang>-mt` (the items with their content in the
language), through the same batches, loss and loop as the zoo's fine-tuning (train.py); only the
LoRA matrices learn. Each language's examples come from a stream of their own, seeded by the zoo's
seed and the language alone, so COMB sees the same examples as the INDV adapters, interleaved.

`shares` says how much of each language's data an adapter sees, in units of the budget (config
LoraSetting: `stage.steps` x `stage.batch_size` examples): INDV `{lang: 1}`, COMB `{every lang: 1}`;
`harness maintain --update uig --factor 2` retrains with `{uig: 2}` and `{uig: 2, others: 1}`.
Seeded initialisation and data and the fixed thread count give the same bits on any machine.
"""

import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path

from harness.zoo.config import ZooConfig
from harness.zoo.lexicon import stable_seed

BASE_ID = "base"  # the registry id the adapters are trained over (adapter_config's base_model_name_or_path)


@dataclasses.dataclass(frozen=True)
class TrainedAdapter:
    network: object  # base with the LoRA layers injected (a PeftModel)
    losses: list[float]
    examples: int
    train_seconds: float  # wall time of the optimisation alone (no loading, saving or held-out loss)


def interleaved_examples(config: ZooConfig, shares: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(prompt, target) task examples: per round, `shares[lang]` from each language's own stream."""
    from harness.zoo.corpora import sft_examples
    from harness.zoo.generators import Writer

    streams = {lang: sft_examples(Writer(random.Random(stable_seed("lora-data", config.seed, lang))), lang, config.seed)
               for lang in shares}
    while True:
        for lang, share in shares.items():
            for _ in range(share):
                yield next(streams[lang])


def train_adapter(config: ZooConfig, tokenizer, base, shares: dict[str, int], seed: int,
                  desc: str = "", progress: bool = False) -> TrainedAdapter:
    """Train a LoRA adapter over `base` (modified in place) on `shares` of the languages' task data."""
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.zoo.train import task_batches, train, training_threads

    setting = config.lora
    stage = dataclasses.replace(setting.stage, steps=setting.stage.steps * sum(shares.values()))
    batches = task_batches(tokenizer, interleaved_examples(config, shares), stage.batch_size, stage.seq_len, stage.steps)
    lora = LoraConfig(r=setting.rank, lora_alpha=setting.alpha, target_modules=list(setting.target_modules),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    with training_threads():
        torch.manual_seed(seed)  # the A matrices' initialisation (B starts at zero)
        network = get_peft_model(base, lora)
        settings = network.peft_config["default"]
        settings.base_model_name_or_path = BASE_ID
        # PEFT keeps the modules as a set, saved in the process's hash order: sorted, the config has the same bits
        settings.target_modules = sorted(settings.target_modules)
        started = time.perf_counter()
        # The LoRA layers sit inside base's own modules, so the zoo's loop trains them through it.
        losses = train(network.get_base_model(), batches, stage, seed, desc=desc, progress=progress)
        seconds = time.perf_counter() - started
    return TrainedAdapter(network, losses, stage.steps * stage.batch_size, round(seconds, 2))


def save_adapter(adapter: TrainedAdapter, folder: Path) -> None:
    """adapter_config.json + adapter_model.safetensors (merges/lora.py reads them)."""
    # No embedding check: base_model_name_or_path is the registry id "base", not a folder to look in.
    adapter.network.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    # PEFT's model card names the folder base was loaded from: not part of the adapter, and it would
    # make the zoo's files depend on where the zoo is.
    (folder / "README.md").unlink(missing_ok=True)


def adapter_seed(config: ZooConfig, adapter_id: str) -> int:
    return stable_seed("train", config.seed, adapter_id)
