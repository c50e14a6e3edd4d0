"""The kinds of model a registry holds, in the paper's order (the leaderboard groups rows by it).

A module of its own so the leaderboard can read it without importing the `harness models` command.
"""

# base: the pre-trained model; ct: base continually pre-trained on one language; sft: base
# instruction-tuned; ctsft: a ct model instruction-tuned; adapter: a PEFT LoRA adapter over another
# registry model (its `base`); merge: a merge recipe over other models.
KINDS = ("base", "ct", "sft", "ctsft", "adapter", "merge")
