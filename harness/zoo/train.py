"""Training one zoo model: a tiny Llama, AdamW, and the two kinds of batches.

Language-modelling stages pack documents (each ended by EOS) into fixed-length rows. Task stages
put one example in each row, batch examples of similar length, and put the loss on the target
only (the answer and the EOS after it), since the evaluation only scores answers. All randomness
comes from the stage's seed and the thread count is fixed, so a stage gives the same weights every
time, on any number of cores.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.zoo.config import ModelShape, Stage

IGNORE = -100  # label id that the loss skips
PROMPT_LOSS_STRIDE = 4  # the prompt term of batch_loss is taken at every 4th position
BUCKET = 8  # task batches are cut from a pool of this many batches' examples sorted by length


# Training always runs on this many intra-op threads, whatever the machine: the thread count
# decides how a sum is split between threads, so it changes the float results' last bits, and the
# regression baseline pins the zoo's bits. A build uses more cores by training independent models
# in parallel processes (build.py), never by sharing one model's work.
TRAINING_THREADS = 1


@contextmanager
def training_threads() -> Iterator[None]:
    """Run the body on TRAINING_THREADS torch threads; the caller's setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def new_model(shape: ModelShape, tokenizer, seed: int):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False)
    return model


def load_model(folder: Path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def save_model(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


# ---- batches ------------------------------------------------------------------------------------

def pack_documents(tokenizer, documents: Iterator[str], n_rows: int, seq_len: int) -> torch.Tensor:
    """n_rows x seq_len token ids: documents joined by EOS, cut into rows."""
    needed = n_rows * seq_len
    ids: list[int] = []
    while len(ids) < needed:
        chunk = [next(documents) for _ in range(64)]
        for encoded in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            ids += encoded + [tokenizer.eos_token_id]
    return torch.tensor(ids[:needed], dtype=torch.long).view(n_rows, seq_len)


def lm_batches(rows: torch.Tensor, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(rows) - batch_size + 1, batch_size):
        batch = rows[start:start + batch_size]
        yield {"input_ids": batch, "labels": batch}


def encode_example(tokenizer, prompt: str, target: str, max_len: int) -> tuple[list[int], list[int]] | None:
    """(input ids, labels) with the loss on the target and EOS; None when longer than max_len."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt_ids) + len(target_ids) > max_len:
        return None
    return prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids


def task_batches(tokenizer, examples: Iterator[tuple[str, str]], batch_size: int, max_len: int,
                 n_batches: int) -> Iterator[dict[str, torch.Tensor]]:
    """Right-padded batches of (prompt, target) examples, BUCKET batches' worth sorted by length.

    One example per row, never several: an example must not see another one's text (a topic
    classifier would read the other example's topic words). Sorting a pool of examples by length
    before cutting it into batches keeps the padding, and so the wasted compute, small. Right
    padding needs no attention mask: under causal attention no real token sees a pad after it.
    """
    made = 0
    while made < n_batches:
        pool = []
        while len(pool) < batch_size * BUCKET:
            example = encode_example(tokenizer, *next(examples), max_len)
            if example is not None:
                pool.append(example)
        pool.sort(key=lambda example: len(example[0]))
        for start in range(0, len(pool), batch_size):
            if made == n_batches:
                return
            yield _padded(pool[start:start + batch_size], tokenizer.pad_token_id)
            made += 1


def _padded(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    text_mask = torch.zeros((len(encoded), width), dtype=torch.bool)  # real tokens, not padding
    for row, (ids, target) in enumerate(encoded):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(ids)] = torch.tensor(target)
        text_mask[row, :len(ids)] = True
    return {"input_ids": input_ids, "labels": labels, "text_mask": text_mask}


def batch_loss(model, batch: dict[str, torch.Tensor], prompt_weight: float = 0.0) -> torch.Tensor:
    """Mean next-token loss over the labelled positions, plus `prompt_weight` times the mean
    next-token loss over the prompts' own tokens (task batches only).

    The prompt term is language modelling on the task's text: without it a model tuned on answers
    alone forgets how to model text at all (its held-out loss rises several-fold), which no
    instruction-tuned LLM does. The output layer runs only where a loss is taken, so with no
    prompt term most of the vocabulary projection (the costliest layer of a tiny model) is skipped;
    the prompt term is taken at every PROMPT_LOSS_STRIDE-th position only, for the same reason.
    """
    hidden = model.model(input_ids=batch["input_ids"]).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    scored = labels != IGNORE
    loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[scored]), labels[scored])
    if prompt_weight and "text_mask" in batch:
        following = batch["input_ids"][:, 1:]
        prompt = ~scored & batch["text_mask"][:, 1:]
        prompt[:, torch.arange(prompt.shape[1]) % PROMPT_LOSS_STRIDE != 0] = False  # a sample is enough
        loss = loss + prompt_weight * torch.nn.functional.cross_entropy(model.lm_head(hidden[prompt]), following[prompt])
    return loss


# ---- the loop -----------------------------------------------------------------------------------

def learning_rate(stage: Stage, step: int) -> float:
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, batches: Iterator[dict[str, torch.Tensor]], stage: Stage, seed: int,
          desc: str = "", progress: bool = True, on_checkpoint: Callable[[int], None] | None = None) -> list[float]:
    """Run `stage.steps` optimiser steps; returns the loss of every step.

    `on_checkpoint(step)` is called after each step of `stage.checkpoints` (to save the model): it
    reads the weights and changes nothing, so the final weights are the same bits with or without it.
    """
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.9, 0.95), weight_decay=0.01)
    losses = []
    bar = tqdm(range(stage.steps), desc=desc, leave=False, disable=not progress, unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(stage, step)
        loss = batch_loss(model, next(batches), stage.prompt_loss_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_checkpoint is not None and step + 1 in stage.checkpoints:
            on_checkpoint(step + 1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
