"""lm-eval task definitions (YAML) for the seven languages, with their prompts and data loaders.

`prompts.py` holds every prompt template and `layout.py` every local-data file path, so the task
YAML, the zoo's synthetic training data and the tests all agree on one format.
"""
