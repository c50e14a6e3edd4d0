"""lm-eval task definitions (YAML) for the seven target languages, the English control and any
extra language a benchmark has data for, with their prompts and data loaders.

The bottom layer of the project: it imports nothing from `harness`, `leaderboard` or `merges`, so
`lm_eval --include_path tasks` works on its own. `languages.py` holds the languages (targets,
control, extras) and the benchmarks that have data for them,
`suite.py` the task families, task and group names, main metrics and the YAML generator,
`errors.py` the one error (TaskError), `utils.py` the loaders the YAML files name,
`prompts.py` every prompt template and `layout.py` every local-data file path, so the task
YAML, the zoo's synthetic training data and the tests all agree on one format;
`fingerprint.py` names the data a task scored, for the results store.
"""
