"""The evaluation options of `harness eval` (and sweep, experiment): chat template, system
instruction, few-shot turns, batch size, the vLLM server's context length and extra arguments.

Each is checked before anything is built, reaches lm-eval or the server command, and is part of a
stored result's key: a run that differs in any of them is another result.
"""

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from harness import HarnessError
from harness.cli import main
from harness.evaluation import EvalSettings, ModelUnderTest, evaluate, scoring_identity
from harness.server import HARNESS_FLAGS, ServerConfig, check_extra_args, server_command
from harness.store import EVAL_OPTIONS, ResultStore

from .conftest import MC_TASK
from .test_result_identity import FIXTURE_DATA, TASK, data_dirs, run, scored_items, scoring  # noqa: F401

# A chat template in the style of Llama 2's: BOS, then [INST] turns, the system message in <<SYS>>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}<<SYS>>{{ m['content'] }}<</SYS>>"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{% endif %}{% endfor %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "[INST] {{ m['content'] }} [/INST]{% endfor %}"
)


# ---- bad input: one line, before anything is built ---------------------------------------------

@pytest.mark.parametrize("settings, message", [
    (dict(batch_size=0), "--batch-size must be a positive number, got 0"),
    (dict(max_model_len=-1), "--max-model-len must be a positive number, got -1"),
    (dict(fewshot_as_multiturn=True), "--fewshot-as-multiturn .* needs --apply-chat-template"),
    (dict(backend="hf", max_model_len=512), "cannot go with --backend hf"),
    (dict(backend="hf", vllm_args=("--swap-space", "2")), "cannot go with --backend hf"),
    (dict(vllm_args=("--port", "9")), "--vllm-arg --port sets what the harness sets itself"),
    (dict(vllm_args=("--load-format=pt",)), "--vllm-arg --load-format=pt sets what the harness sets itself"),
    (dict(vllm_args=("--max_model_len", "9")), "sets what the harness sets itself .*; use --max-model-len"),
])
def test_bad_option_combinations_are_refused(settings, message):
    with pytest.raises(HarnessError, match=message):
        EvalSettings(**settings)


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size must be a positive number"),
    (["--fewshot-as-multiturn"], "needs --apply-chat-template"),
    (["--vllm-arg=--host 0.0.0.0"], "--vllm-arg --host sets what the harness sets itself"),
    (["--server", "http://127.0.0.1:9", "--max-model-len", "512"], "cannot go with --server"),
    (["--server", "http://127.0.0.1:9", "--vllm-arg=--swap-space 2"], "cannot go with --server"),
    (["--backend", "hf", "--max-model-len", "512"], "cannot go with --backend hf"),
    (["--vllm-arg=--swap-space '2"], "is not shell-quoted text: No closing quotation"),
])
def test_cli_option_errors_are_one_line_before_any_build(argv, message, capsys, monkeypatch):
    monkeypatch.setattr("harness.build.materialize", lambda *a, **k: pytest.fail("a model was built"))
    assert main(["eval", "--model", "ct-uig", "--split", "dev", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness eval: error: ") and message.split(" .*")[0] in err and "\n" not in err


@pytest.mark.parametrize("command", ["sweep", "experiment"])
def test_sweep_and_experiment_take_and_check_the_same_options(command, capsys):
    extra = ["--model", "ties-uig", "--grid", "densities"] if command == "sweep" else []
    assert main([command, *extra, "--fewshot-as-multiturn"]) == 2
    assert "needs --apply-chat-template" in capsys.readouterr().err


def test_extra_server_arguments_may_not_repeat_any_flag_the_harness_sets(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    for device in ("cpu", "cuda"):
        flags = {arg for arg in server_command(ServerConfig(tmp_path, "m", tmp_path / "log", device=device), 1)
                 if arg.startswith("--")}
        assert flags <= set(HARNESS_FLAGS)  # a flag added to the command must be added to the refused ones
    for flag in HARNESS_FLAGS:
        with pytest.raises(HarnessError, match="sets what the harness sets itself"):
            check_extra_args([f"{flag}=1"])
    check_extra_args(["--swap-space", "2", "--gpu-memory-utilization=0.5", "--model-impl", "transformers"])


def test_the_server_command_carries_max_model_len_and_the_extra_arguments_last(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    config = ServerConfig(tmp_path, "m", tmp_path / "log", max_model_len=128, extra_args=["--swap-space", "2"])
    command = server_command(config, 1)
    assert dict(zip(command, command[1:]))["--max-model-len"] == "128"
    assert command[-2:] == ["--swap-space", "2"]


def test_cli_options_reach_the_settings():
    import argparse

    from harness.evaluate import add_eval_options, eval_options

    parser = argparse.ArgumentParser()
    add_eval_options(parser)
    args = parser.parse_args(["--apply-chat-template", "--system-instruction", "Be brief.", "--batch-size", "2",
                              "--max-model-len", "256", "--vllm-arg=--swap-space 2", "--vllm-arg=--seed-x"])
    options = eval_options(args)
    assert options == {"apply_chat_template": True, "system_instruction": "Be brief.", "fewshot_as_multiturn": None,
                       "batch_size": 2, "max_model_len": 256, "vllm_args": ("--swap-space", "2", "--seed-x")}
    assert EvalSettings(**options).multiturn_fewshot  # lm-eval's default with a chat template
    assert not EvalSettings(**{**options, "fewshot_as_multiturn": False}).multiturn_fewshot
    assert parser.parse_args([]).batch_size == 8


# ---- identity: every option is part of a stored result's key ------------------------------------

OPTION_RUNS = [  # one run per option that differs from the defaults
    dict(apply_chat_template=True),
    dict(apply_chat_template=True, fewshot_as_multiturn=False),
    dict(system_instruction="Answer with the topic."),
    dict(batch_size=2),
    dict(backend="vllm", server_url="http://127.0.0.1:9", max_model_len=256),
    dict(backend="vllm", server_url="http://127.0.0.1:9", vllm_args=("--swap-space", "2")),
]


def test_runs_differing_in_any_option_are_different_results(data_dirs, scoring, tmp_path):
    original, _ = data_dirs
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    assert run(original, store_url)[0] == "evaluated"
    for options in OPTION_RUNS:
        assert run(original, store_url, **options)[0] == "evaluated", options  # not the default result
        assert run(original, store_url, **options)[0] == "skipped", options  # its own result, stored
    assert run(original, store_url)[0] == "skipped"  # the default result is still there
    stored = ResultStore(store_url).results(latest_only=False)
    assert len(stored.drop_duplicates([*EVAL_OPTIONS, "backend"])) == 1 + len(OPTION_RUNS)
    chat = stored[stored["system_instruction"] == "Answer with the topic."]
    assert len(chat) == 1 and not chat["apply_chat_template"].item()


def test_the_report_shows_the_result_of_the_runs_own_options(data_dirs, scoring, tmp_path):
    original, _ = data_dirs
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    run(original, store_url)  # 0.1
    run(original, store_url, apply_chat_template=True)  # 0.2
    assert "0.1000" in run(original, store_url)[1] and "0.2000" not in run(original, store_url)[1]
    assert "0.2000" in run(original, store_url, apply_chat_template=True)[1]


def test_a_sweeps_scoring_identity_with_the_default_options_is_what_it_was_before_them(tmp_path):
    """Sweep trials stored before the options existed were scored with the defaults: they stay reusable."""
    from harness import lm_eval_run
    from harness.evaluation import task_data
    from harness.results import result_key, scored_items as items_of

    settings = EvalSettings(split="dev", data_dir=FIXTURE_DATA, backend="hf", limit=5)
    with task_data(settings):
        task = lm_eval_run.load_tasks([TASK], settings.task_dir)[TASK]
        items = items_of(task, settings.limit)
        key = asdict(result_key("", TASK, task, items, settings))
    before = {name: value for name, value in key.items() if name not in EVAL_OPTIONS}  # the key's fields until now
    old_identity = hashlib.sha256(json.dumps([{**before, "items": 5}], sort_keys=True).encode()).hexdigest()
    assert scoring_identity([TASK], settings) == old_identity
    assert scoring_identity([TASK], EvalSettings(split="dev", data_dir=FIXTURE_DATA, backend="hf", limit=5,
                                                 apply_chat_template=True)) != old_identity


# ---- the chat template through lm-eval's hf backend ----------------------------------------------

def model_with_template(tiny_model: Path, dest: Path, template: str | None) -> ModelUnderTest:
    """A copy of the tiny model whose tokenizer has `template` as its chat template (None: none)."""
    shutil.copytree(tiny_model, dest)
    config_file = dest / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    config_file.write_text(json.dumps(config))
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    return ModelUnderTest(dest.name, dest, "c" * 64, "sft")


def adding_bos(model_dir: Path) -> None:
    """Make the tokenizer put BOS before every text, as Llama's does."""
    from tokenizers import Tokenizer, processors

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", bos_id)])
    tokenizer.save(str(model_dir / "tokenizer.json"))


def samples_of(run_dir: Path, task: str) -> list[dict]:
    (path,) = run_dir.glob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def hf_settings(tiny_tasks: Path, tmp_path: Path, **options) -> EvalSettings:
    return EvalSettings(split="dev", backend="hf", store_url=f"sqlite:///{tmp_path / 'r.db'}", task_dir=tiny_tasks,
                        limit=2, progress=False, batch_size=2, **options)


def test_hf_prompts_carry_the_chat_template_and_the_system_instruction(tiny_model, tiny_tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    model = model_with_template(tiny_model, tmp_path / "chat", CHAT_TEMPLATE)
    plain = evaluate(model, [MC_TASK], hf_settings(tiny_tasks, tmp_path))
    chat = evaluate(model, [MC_TASK], hf_settings(tiny_tasks, tmp_path, apply_chat_template=True,
                                                  system_instruction="Answer with the topic."))
    assert [o.status for o in chat.outcomes] == ["evaluated"]  # not the plain run's stored result

    plain_prompt = samples_of(plain.run_dir, MC_TASK)[0]["arguments"]["gen_args_0"]["arg_0"]
    chat_prompt = samples_of(chat.run_dir, MC_TASK)[0]["arguments"]["gen_args_0"]["arg_0"]
    assert plain_prompt.startswith("Classify the topic of the text.") and "[INST]" not in plain_prompt
    assert chat_prompt == f"<s><<SYS>>Answer with the topic.<</SYS>>[INST] {plain_prompt} [/INST]"
    results = json.loads(next(chat.run_dir.glob("results_*.json")).read_text())
    assert results["chat_template"] == CHAT_TEMPLATE and results["system_instruction"] == "Answer with the topic."


def test_a_chat_template_on_a_tokenizer_without_one_is_one_line_naming_the_model(tiny_model, tiny_tasks, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    model = model_with_template(tiny_model, tmp_path / "plain-model", None)
    with pytest.raises(HarnessError, match=r"^model plain-model has no chat template in its tokenizer .*"
                                           r"leave out --apply-chat-template$"):
        evaluate(model, [MC_TASK], hf_settings(tiny_tasks, tmp_path, apply_chat_template=True))


def test_a_system_instruction_the_template_refuses_is_one_line(tiny_model, tiny_tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    model = model_with_template(tiny_model, tmp_path / "no-system", NO_SYSTEM_TEMPLATE)
    with pytest.raises(HarnessError, match="the chat template of model no-system takes no system message .*"
                                           "leave out --system-instruction"):
        evaluate(model, [MC_TASK], hf_settings(tiny_tasks, tmp_path, apply_chat_template=True,
                                               system_instruction="Be brief."))


def test_both_backends_tokenize_a_templated_prompt_alike(tiny_model, tmp_path):
    """The completions client adds no second BOS to a template that writes one, as lm-eval's hf
    backend does not: the vLLM server scores the token ids hf scores."""
    from harness.lm_eval_run import completions_model, hf_model

    model = model_with_template(tiny_model, tmp_path / "chat", CHAT_TEMPLATE)
    adding_bos(model.path)
    settings = EvalSettings(apply_chat_template=True, max_model_len=256)
    client = completions_model(model, settings, "http://127.0.0.1:9/v1/completions", "chat")
    local = hf_model(model, EvalSettings(backend="hf"))
    prompt = client.apply_chat_template([{"role": "user", "content": "Topic?"}])
    assert prompt == local.apply_chat_template([{"role": "user", "content": "Topic?"}])
    assert client.tok_encode(prompt) == local.tok_encode(prompt)
    assert client.tok_encode(prompt).count(local.tokenizer.bos_token_id) == 1
    assert local.tok_encode("Topic?")[0] == local.tokenizer.bos_token_id  # the tokenizer adds BOS to plain text
    assert client.max_length == 256 - 1  # the client truncates where the server's context ends (less 1: lm-eval)
    plain = completions_model(model, EvalSettings(), "http://127.0.0.1:9/v1/completions", "chat")
    assert plain.tok_encode("Topic?") == local.tok_encode("Topic?")  # BOS added to a plain prompt by both
