"""What the zoo is: the model shape, the training stages, the data sizes and the model list.

Every number that changes what `harness zoo build` produces lives here (or in the zoo's code), so
the definition hash in the manifest covers it. The step counts are sized so that the whole zoo
trains in about ten minutes on two CPU cores (see the README for measured times).
"""

from dataclasses import dataclass, field

from tasks.languages import TARGET_LANGUAGES


@dataclass(frozen=True)
class ModelShape:
    """A tiny Llama: head size 32 (vLLM's CPU attention needs 32 or more), 512 positions."""
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 512


@dataclass(frozen=True)
class Stage:
    """The optimisation of one training stage (AdamW, linear warm-up, cosine decay to 10%)."""
    steps: int
    batch_size: int
    seq_len: int  # language modelling: tokens per sequence; task data: longest example kept
    lr: float
    warmup_steps: int = 10
    prompt_loss_weight: float = 0.0  # task stages: weight of the loss on the prompts' own text (train.batch_loss)
    # Steps after which an intermediate checkpoint is saved (CT only: the curves of the paper's Figure 2).
    checkpoints: tuple[int, ...] = ()

    def __post_init__(self):
        if list(self.checkpoints) != sorted(set(self.checkpoints)) or any(not 0 < s < self.steps for s in self.checkpoints):
            raise ValueError(f"checkpoint steps {self.checkpoints} must increase, each between 0 and {self.steps}")

    def tokens_after(self, steps: int) -> int:
        """Tokens a language-modelling stage has trained on after `steps` steps (rows of seq_len tokens)."""
        return steps * self.batch_size * self.seq_len


@dataclass(frozen=True)
class EvalSizes:
    """Rows of the synthetic evaluation files; the real benchmarks' sizes."""
    sib: dict[str, int] = field(default_factory=lambda: {"train": 701, "dev": 99, "test": 204})
    belebele: int = 900  # questions, two per passage
    mgsm: int = 250
    # MLiC-Eval: (dev, test); dev is spread over train_1, train_2, train_3.
    mlic: dict[str, tuple[int, int]] = field(default_factory=lambda: {
        "tc": (48, 504), "mrc": (20, 200), "rs": (40, 407), "math": (20, 200)})


@dataclass(frozen=True)
class LoraSetting:
    """The paper's adapters (Dmonte et al.): plain LoRA over `base` on task data, one per language.

    Budget rule: a language's adapter (INDV, `lora-<lang>`) trains `stage.steps` steps of
    `stage.batch_size` examples of that language; the combined adapter (COMB, `lora-comb`) sees the
    same examples of every language, interleaved, in len(languages) times the steps, so COMB and
    the INDV adapters together train on the same data.
    """
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    stage: Stage = Stage(steps=60, batch_size=8, seq_len=320, lr=2e-3, warmup_steps=5, prompt_loss_weight=1.0)


@dataclass(frozen=True)
class ZooConfig:
    seed: int = 1234
    languages: tuple[str, ...] = tuple(TARGET_LANGUAGES)  # trained for; the English control is only evaluated
    shape: ModelShape = ModelShape()
    pretrain: Stage = Stage(steps=300, batch_size=8, seq_len=256, lr=3e-3, warmup_steps=20)
    continued: Stage = Stage(steps=120, batch_size=8, seq_len=256, lr=1e-3, checkpoints=(30, 60, 90))
    sft: Stage = Stage(steps=500, batch_size=16, seq_len=320, lr=1e-3, prompt_loss_weight=1.0)
    replay: float = 0.25  # share of English documents in continued pre-training (the paper's 1/4)
    code_switch: float = 0.15  # chance that a word of a language document stays English
    tokenizer_documents: int = 1200  # documents per language (English: twice as many) for BPE
    eval_sizes: EvalSizes = EvalSizes()
    lora: LoraSetting = LoraSetting()


@dataclass(frozen=True)
class ZooModel:
    id: str  # the registry id and folder name
    kind: str  # pretrain | continued | sft | lora (a PEFT adapter over its parent, not a full model)
    parent: str | None  # the model it starts from
    lang: str  # language of its training text: "en", a LANGUAGES code, or COMBINED (lora-comb)
    task_lang: str | None = None  # sft and lora: language of the task data (COMBINED: every language's)


COMBINED = "all"  # the language of lora-comb: every target language's task data


def zoo_models(config: ZooConfig) -> list[ZooModel]:
    """Every zoo model in training order (each after its parent)."""
    models = [ZooModel("base", "pretrain", None, "en"), ZooModel("sft-flan", "sft", "base", "en", "en")]
    for lang in config.languages:
        models += [
            ZooModel(f"ct-{lang}", "continued", "base", lang),
            ZooModel(f"ctsft-{lang}-flan", "sft", f"ct-{lang}", lang, "en"),
            ZooModel(f"ctsft-{lang}-mt", "sft", f"ct-{lang}", lang, lang),
        ]
    return models + adapter_models(config)


def adapter_models(config: ZooConfig) -> list[ZooModel]:
    """The paper's adapters over base: INDV `lora-<lang>` per language, then COMB `lora-comb`."""
    return ([ZooModel(f"lora-{lang}", "lora", "base", lang, lang) for lang in config.languages]
            + [ZooModel("lora-comb", "lora", "base", COMBINED, COMBINED)])


CHECKPOINTS = "checkpoints"  # the folder inside a model's folder holding its intermediate checkpoints


def checkpoint_label(step: int) -> str:
    """`step30`: the checkpoint's folder name and its label in the registry (`ct-uig@step30`)."""
    return f"step{step}"


def stage_of(config: ZooConfig, model: ZooModel) -> Stage:
    return {"pretrain": config.pretrain, "continued": config.continued, "sft": config.sft,
            "lora": config.lora.stage}[model.kind]
