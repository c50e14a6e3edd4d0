"""`harness import`: turn a GGUF checkpoint into a safetensors folder the harness can merge and serve.

    harness import MODEL.gguf OUT_DIR [--dtype float32|bfloat16|float16]
    harness import FOLDER_WITH_ONE_GGUF OUT_DIR

GGUF (llama.cpp's format) is how many small models ship, often quantised. transformers reads it
(`from_pretrained(..., gguf_file=...)`, dequantising every tensor), but refuses to `save_pretrained`
a model it loaded from GGUF. So the weights it dequantised are loaded into a plain model built from
the same config, which saves as usual, with the tokenizer (chat template included) that transformers
converts from the GGUF's vocabulary. Tied embeddings stay tied: a GGUF without `output.weight` gives
a config with `tie_word_embeddings: true` and one embedding matrix in the safetensors.

The folder is written under a temporary name beside OUT_DIR and renamed when complete, so OUT_DIR
either does not exist or holds a whole checkpoint. What cannot be converted (not a GGUF file, an
architecture transformers cannot read from GGUF, a quantisation gguf cannot dequantise) is a
one-line error naming the file.
"""

from __future__ import annotations

from pathlib import Path

from harness import HarnessError, one_line

GGUF_MAGIC = b"GGUF"
DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="GGUF_FILE_OR_FOLDER", type=Path,
                        help="a .gguf file, or a folder holding exactly one")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the safetensors folder to write (must not exist)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="dtype of the dequantised weights (default float32)")


def run(args) -> int:
    out = import_gguf(args.source, args.out_dir, args.dtype)
    print(f"imported {gguf_file_in(args.source)} -> {out}")
    return 0


def import_gguf(source: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Convert the GGUF at `source` (a file, or a folder holding one) into the new folder `out_dir`."""
    from merges.io import atomic_folder  # here, not at the top: it imports torch, which `harness --help` must not

    if dtype not in DTYPES:
        raise HarnessError(f"unsupported dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    gguf_file = gguf_file_in(source)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise HarnessError(f"output folder {out_dir} already exists: choose a new one or delete it")
    check_convertible(gguf_file)
    with atomic_folder(out_dir, "the imported model") as partial:
        _write_checkpoint(gguf_file, partial, dtype)
    return out_dir


def gguf_file_in(source: Path) -> Path:
    """The GGUF file itself, or the one `.gguf` in a folder."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise HarnessError(f"no such file or folder: {source}")
    found = sorted(source.glob("*.gguf"))
    if len(found) != 1:
        listed = f" ({', '.join(path.name for path in found)})" if found else ""
        raise HarnessError(f"{source} holds {len(found)} .gguf files{listed}; name the file to import")
    return found[0]


def check_convertible(gguf_file: Path) -> None:
    """Refuse, before any weight is read, a file transformers or gguf could not convert."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    with gguf_file.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise HarnessError(f"{gguf_file} is not a GGUF file (it does not start with {GGUF_MAGIC.decode()})")
    try:
        reader = GGUFReader(gguf_file)
        architecture = reader.fields["general.architecture"].contents()
    except KeyError:
        raise HarnessError(f"{gguf_file}: no general.architecture in its metadata") from None
    except Exception as err:  # a truncated or damaged file: gguf raises whatever its parser hits
        raise HarnessError(f"{gguf_file}: cannot read it as GGUF ({one_line(err, 200)})") from None
    # transformers lists its metadata sections ("general", "tokenizer") among the architectures
    supported = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
    if architecture not in supported:
        raise HarnessError(f"{gguf_file}: architecture {architecture!r} cannot be converted "
                           f"(transformers reads these from GGUF: {', '.join(supported)})")
    for tensor in reader.tensors:
        if not _can_dequantise(tensor.tensor_type):
            raise HarnessError(f"{gguf_file}: tensor {tensor.name} is quantised as {tensor.tensor_type.name}, "
                               f"which the gguf package cannot dequantise")


def _can_dequantise(quant_type) -> bool:
    """Whether gguf dequantises this type: tried on one all-zero block, as gguf offers no query."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    _block_size, block_bytes = GGML_QUANT_SIZES[quant_type]
    try:
        dequantize(np.zeros((1, block_bytes), dtype=np.uint8), quant_type)
    except NotImplementedError:
        return False
    return True


def _write_checkpoint(gguf_file: Path, folder: Path, dtype: str) -> None:
    """Dequantise through transformers, then save a plain model (which save_pretrained accepts)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where, name = str(gguf_file.parent), gguf_file.name
    config = AutoConfig.from_pretrained(where, gguf_file=name)
    # Reading the GGUF's metadata takes seconds (every vocabulary entry is parsed): read the config once.
    loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, config=config, dtype=torch.float32)
    weights = {key: tensor.to(getattr(torch, dtype)) for key, tensor in loaded.state_dict().items()}
    # Built on the meta device and filled by assignment: no random init, no second copy of the weights.
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    plain.load_state_dict(weights, strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(folder)
    try:
        AutoTokenizer.from_pretrained(where, gguf_file=name).save_pretrained(folder)
    except Exception as err:  # transformers converts only some GGUF vocabularies
        raise HarnessError(f"{gguf_file}: cannot convert its tokenizer ({one_line(err, 200)})") from None
