"""PEFT LoRA adapters as language vectors: read an adapter folder, check it, give each module's ΔW.

A LoRA adapter (Hu et al. 2021) changes a linear layer's weight W (out x in) by

    ΔW = (lora_alpha / r) * B @ A        B: out x r, A: r x in

which is the adapter's *language vector* for that layer (Dmonte et al.). A PEFT adapter folder
holds `adapter_config.json` and `adapter_model.safetensors`, whose tensors are named
`base_model.model.<module>.lora_A.weight` / `lora_B.weight`; the layer they change is the base
model's tensor `<module>.weight`.

Only plain LoRA is implemented. A variant that changes the formula (DoRA's magnitude vector,
rsLoRA's alpha/sqrt(r) scaling, per-module `alpha_pattern`, LoRA biases, `fan_in_fan_out`
layers, modules saved whole, LoRA on embeddings, trainable tokens) is a one-line MergeError
naming the adapter and the setting: a silently wrong ΔW would make every merge of it wrong.
A per-module rank (`rank_pattern`) needs nothing special: r is read from A's shape.

`materialise(base_tensor, delta)` is the one definition of "base + ΔW" in this project: the
merge engine reads an adapter input through it (`AdapterCheckpoint`: the adapter seen as the full
model it makes over a base checkpoint, one tensor at a time), and a full model built from an
adapter uses it, so a merge over adapters and a merge over the full models they make see the
same tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from merges.errors import MergeError
from merges.io import Checkpoint, TensorInfo

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"

# Settings that change what the adapter computes; each must have its plain-LoRA value.
# (setting, plain value(s), what the variant is)
UNSUPPORTED_SETTINGS = (
    ("use_dora", (False, None), "DoRA"),
    ("use_rslora", (False, None), "rsLoRA scaling"),
    ("bias", ("none", None), "trained biases"),
    ("lora_bias", (False, None), "LoRA bias"),
    ("fan_in_fan_out", (False, None), "fan_in_fan_out (Conv1D) layers"),
    ("alpha_pattern", ({}, None), "a per-module alpha_pattern"),
    ("modules_to_save", (None, []), "modules_to_save (whole modules trained)"),
    ("trainable_token_indices", (None, [], {}), "trainable tokens"),
    ("target_parameters", (None, []), "LoRA on parameters (target_parameters)"),
    ("use_qalora", (False, None), "QA-LoRA"),
    ("layer_replication", (None, []), "layer replication"),
    ("use_bdlora", (False, None), "BD-LoRA"),
    ("alora_invocation_tokens", (None, []), "activated LoRA"),
)
# Tensors of variants this module does not implement, by a fragment of their name.
UNSUPPORTED_TENSORS = (("lora_magnitude_vector", "DoRA"), ("lora_embedding_", "LoRA on embeddings"),
                       ("lora_bias", "LoRA bias"))


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class LoraModule:
    """One adapted layer: the base tensor it changes and its two factors' tensor names."""

    target: str   # the base model's tensor, e.g. model.layers.0.self_attn.q_proj.weight
    a_key: str
    b_key: str
    rank: int
    shape: tuple[int, int]  # ΔW's shape: (out, in)
    scale: float  # lora_alpha / r


class LoraAdapter:
    """A PEFT LoRA adapter folder, checked on opening; factors are read one module at a time."""

    def __init__(self, name: str, folder: Path):
        self.name = name
        self.folder = Path(folder)
        self.config = self._read_config()
        self._check_settings()
        self.alpha = self._alpha()
        self.base_model = self.config.get("base_model_name_or_path")
        self.weights = self.folder / ADAPTER_WEIGHTS
        self.modules = self._read_modules()

    def _fail(self, message: str) -> MergeError:
        return MergeError(f"adapter {self.name!r}: {message}")

    def _read_config(self) -> dict:
        path = self.folder / ADAPTER_CONFIG
        if not path.is_file():
            raise self._fail(f"no {ADAPTER_CONFIG} in {self.folder}")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise self._fail(f"{path} is not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise self._fail(f"{path} must hold a JSON object")
        if config.get("peft_type") != "LORA":
            raise self._fail(f"peft_type is {config.get('peft_type')!r}; only LoRA adapters (LORA) are supported")
        return config

    def _check_settings(self) -> None:
        for setting, plain_values, variant in UNSUPPORTED_SETTINGS:
            value = self.config.get(setting)
            if value not in plain_values:
                raise self._fail(f"{setting} = {value!r}: {variant} is not implemented, only plain LoRA")

    def _alpha(self) -> float:
        alpha = self.config.get("lora_alpha")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise self._fail(f"lora_alpha must be a positive number, got {alpha!r}")
        return float(alpha)

    def _read_modules(self) -> dict[str, LoraModule]:
        shapes = self._tensor_shapes()
        for key in shapes:
            for fragment, variant in UNSUPPORTED_TENSORS:
                if fragment in key:
                    raise self._fail(f"tensor {key}: {variant} is not implemented, only plain LoRA")
        modules = {}
        for a_key in sorted(k for k in shapes if k.endswith(A_SUFFIX)):
            module = self._module(a_key, shapes)
            modules[module.target] = module
        stray = sorted(set(shapes) - {k for m in modules.values() for k in (m.a_key, m.b_key)})
        if stray:
            raise self._fail(f"tensor {stray[0]} is not a lora_A/lora_B factor")
        if not modules:
            raise self._fail(f"{self.weights} holds no lora_A/lora_B factors")
        return modules

    def _tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        if not self.weights.is_file():
            raise self._fail(f"no {ADAPTER_WEIGHTS} in {self.folder} (only safetensors adapters are read)")
        try:
            with safe_open(str(self.weights), framework="pt", device="cpu") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except (SafetensorError, OSError) as err:
            raise self._fail(f"unreadable safetensors file {self.weights} ({err})") from None

    def _module(self, a_key: str, shapes: dict[str, tuple[int, ...]]) -> LoraModule:
        stem = a_key[: -len(A_SUFFIX)]
        b_key = stem + B_SUFFIX
        if b_key not in shapes:
            raise self._fail(f"{a_key} has no matching {b_key}")
        a_shape, b_shape = shapes[a_key], shapes[b_key]
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise self._fail(f"{stem}: lora_A {list(a_shape)} and lora_B {list(b_shape)} are not r x in and out x r")
        rank = a_shape[0]
        target = (stem[len(KEY_PREFIX):] if stem.startswith(KEY_PREFIX) else stem) + ".weight"
        return LoraModule(target, a_key, b_key, rank, (b_shape[0], a_shape[1]), self.alpha / rank)

    def factors(self, target: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) of the module changing `target`, in float32, unscaled."""
        module = self.modules[target]
        try:
            with safe_open(str(self.weights), framework="pt", device="cpu") as handle:
                return handle.get_tensor(module.b_key).float(), handle.get_tensor(module.a_key).float()
        except (SafetensorError, OSError) as err:
            raise self._fail(f"cannot read {module.a_key} from {self.weights} ({err})") from None

    def delta(self, target: str) -> torch.Tensor:
        """ΔW = (alpha / r) * B @ A for the base tensor `target`, in float32."""
        b, a = self.factors(target)
        return (b @ a) * self.modules[target].scale

    def check_base(self, base_shapes: dict[str, tuple[int, ...]], base_name: str) -> None:
        """Every adapted tensor exists in the base with ΔW's shape; else an error naming it."""
        for target, module in self.modules.items():
            if target not in base_shapes:
                raise self._fail(f"changes {target}, which base model {base_name!r} does not have")
            if tuple(base_shapes[target]) != module.shape:
                raise self._fail(f"ΔW of {target} is {list(module.shape)} but base model {base_name!r} "
                                 f"has {list(base_shapes[target])}")


def materialise(base_tensor: torch.Tensor, delta: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """base + ΔW, added in float32 and stored in `dtype` (default: the base tensor's)."""
    return (base_tensor.float() + delta).to(dtype or base_tensor.dtype)


class AdapterCheckpoint(Checkpoint):
    """An adapter read as the full model it makes: the base checkpoint's tensors, with base + ΔW
    (`materialise`) in place of each tensor the adapter changes. Config and tokenizer are the
    base's. Tensors are built one at a time on `read`, so memory stays that of one module.

    The adapted tensors are read in float32 whatever the base's dtype: a LoRA's ΔW is small
    against the base's weights, and rounding base + ΔW to a bfloat16 base would lose much of it
    before the merge (PEFT never rounds it either: it adds B A x to the base layer's output).
    The merge's output is rounded once, to its dtype. Over a float32 base this is exactly the
    full model `materialise` makes.

    The adapter is checked against the base (every adapted tensor exists there with ΔW's shape)
    on opening, before a merge writes anything."""

    def __init__(self, name: str, folder: Path, base: Checkpoint):
        self.adapter = LoraAdapter(name, folder)
        self.adapter.check_base({tensor: info.shape for tensor, info in base.tensors.items()}, base.name)
        super().__init__(name, base.folder)
        self.base_name = base.name
        for target in self.adapter.modules:
            self.tensors[target] = TensorInfo(self.tensors[target].shape, torch.float32)

    def read(self, tensor: str) -> torch.Tensor:
        stored = super().read(tensor)
        if tensor not in self.adapter.modules:
            return stored
        return materialise(stored, self.adapter.delta(tensor), torch.float32)
