"""The zoo's one shared tokenizer: byte-level BPE trained on all eight synthetic languages.

Byte-level, so no text is ever out of vocabulary. The pre-tokenizer keeps combining marks with
their letters (GPT-2's pattern would cut every Indic vowel sign off its consonant), lets Tibetan
syllables merge across the tsheg (Tibetan writes no spaces, so GPT-2's pattern would make every
syllable and every tsheg a token of its own) and splits numbers into single digits, as Llama's
tokenizer does. No BOS is added automatically: the hf
backend of lm-eval and a vLLM server then see the same token ids for a prompt.
"""

from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# Words (letters with their marks; tsheg U+0F0B included), single digits, runs of other symbols, whitespace.
PRETOKENIZE_PATTERN = r" ?[\p{L}\p{M}\x{0F0B}]+| ?\p{N}| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"


def train_tokenizer(texts: list[str], vocab_size: int):
    """A `transformers.PreTrainedTokenizerFast` trained on `texts`.

    Deterministic for the same texts, whatever the number of Rayon threads the training runs on
    (tests/zoo/test_portable_bits.py builds with one and with two).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)


def load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))
