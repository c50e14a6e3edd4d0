"""The YAML tasks as lm-eval sees them: they resolve, render, fail clearly, and run end to end."""

import math

import pytest

from tasks import prompts
from tasks.errors import TaskError
from tasks.languages import ALL_SUITE, CONTROL_LANGUAGES, LANGUAGES, TARGET_LANGUAGES
from tasks.suite import SPLITS, data_env, group_name, main_metric, task_names


def _load(task_manager, names):
    return task_manager.load(list(names))


def _whole_suite_and_controls() -> list[str]:
    """The whole-suite groups (the target languages) and the control languages' groups."""
    return [group_name(lang, split) for split in SPLITS for lang in ["all", *CONTROL_LANGUAGES]]


def _every_group_and_task() -> list[str]:
    """The groups that hold every default-suite task once (the whole suite's and the other languages'),
    and the tasks in no group: those outside their language's default suite (SIB-200 for Tibetan)."""
    groups = [group_name(lang, split) for split in SPLITS
              for lang in ["all", *(lang for lang in LANGUAGES if lang not in TARGET_LANGUAGES)]]
    outside = [task for lang in LANGUAGES for split in SPLITS for task in task_names(lang, split, ALL_SUITE)
               if task not in task_names(lang, split)]
    return groups + outside


def test_every_task_and_group_resolves_from_local_data(task_manager, local_data):
    loaded = _load(task_manager, _every_group_and_task())
    expected_tasks = {name for lang in LANGUAGES for split in SPLITS for name in task_names(lang, split, ALL_SUITE)}
    assert set(loaded["tasks"]) == expected_tasks
    for split in SPLITS:
        assert loaded["group_map"][group_name("all", split)] == [group_name(lang, split) for lang in TARGET_LANGUAGES]
        for lang in LANGUAGES:
            assert loaded["group_map"][group_name(lang, split)] == task_names(lang, split)
            group = loaded["groups"][group_name(lang, split)]
            [aggregate] = group.aggregate_metric_list
            assert (aggregate.metric, aggregate.weight_by_size, aggregate.filter_list) == ("acc", False, ["none"])
    for name, task in loaded["tasks"].items():
        docs = list(task.test_docs())
        assert docs, name
        doc = docs[0]
        text = task.doc_to_text(doc)
        assert text.endswith("Answer:") or text.endswith("Topic:"), name
        if main_metric(name) == "acc":
            assert task.OUTPUT_TYPE == "multiple_choice"
            choices = task.doc_to_choice(doc)
            assert 0 <= task.doc_to_target(doc) < len(choices) and all(c.startswith(" ") for c in choices)
        elif main_metric(name) == "rougeL":  # CMiLBench's extractive reading comprehension
            assert task.OUTPUT_TYPE == "generate_until"
            assert task.doc_to_target(doc) == prompts.extractive_reading_target(doc["answer"])
        else:
            assert task.OUTPUT_TYPE == "generate_until"
            assert task.doc_to_target(doc) == prompts.math_target(doc["answer"])


def test_sib_prompt_is_the_shared_template(task_manager, local_data):
    task = _load(task_manager, ["lrm_sib_ory_test"])["tasks"]["lrm_sib_ory_test"]
    doc = next(iter(task.test_docs()))
    assert task.doc_to_text(doc) == prompts.classification_prompt(doc["text"], doc["labels"])
    assert task.doc_to_choice(doc) == prompts.classification_choices(doc["labels"])
    assert len(list(task.test_docs())) == 21  # the fixture excerpt's test rows (tests/fixtures/data)


def test_missing_data_is_one_line_naming_task_and_file(task_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    with pytest.raises(TaskError) as err:
        _load(task_manager, ["lrm_belebele_tam_dev"])
    assert str(err.value) == f"lrm_belebele_tam_dev: missing data file {tmp_path / 'belebele/tam_Taml.jsonl'}"


def _evaluate(task_manager, model_dir, tasks, **kwargs):
    from lm_eval import simple_evaluate

    return simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
                           tasks=tasks, task_manager=task_manager, batch_size=4, random_seed=0,
                           numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0, **kwargs)


def _prompt(sample: dict) -> str:
    """The context lm-eval gave the model for a logged sample (its first request)."""
    return sample["arguments"][0][0]


def test_end_to_end_on_a_tiny_model_both_splits(task_manager, local_data, tiny_model):
    groups = [group_name("tel", "dev"), group_name("tel", "test")]
    # A random model never stops by itself: cap generation so the math tasks stay quick on a CPU.
    results = _evaluate(task_manager, tiny_model, groups, limit=3, log_samples=True, gen_kwargs="max_gen_toks=24")
    scores = results["results"]
    for split in SPLITS:
        tasks = task_names("tel", split)
        main = [scores[name][f"{main_metric(name)},none"] for name in tasks]
        assert all(0.0 <= value <= 1.0 for value in main)
        # The language average is the plain mean of the tasks' main metrics (acc, acc, exact_match).
        assert math.isclose(scores[group_name("tel", split)]["acc,none"], sum(main) / len(main))
        for name in tasks:
            assert len(results["samples"][name]) == 3
    mgsm = results["samples"]["lrm_mgsm_tel_test"][0]
    assert _prompt(mgsm) == prompts.math_prompt(mgsm["doc"]["question"])
    assert set(mgsm["metrics"]) == {"exact_match", "acc"}


def test_few_shot_draws_exemplars_from_the_train_split(task_manager, local_data, tiny_model):
    results = _evaluate(task_manager, tiny_model, ["lrm_mlic_rs_uig_test", "lrm_belebele_tam_dev"],
                        limit=2, num_fewshot=2, log_samples=True)
    rs_prompt = _prompt(results["samples"]["lrm_mlic_rs_uig_test"][0])
    assert rs_prompt.count("Choose the best response to the dialogue.") == 3  # 2 exemplars + the item
    assert rs_prompt.count(" from train_") == 2 and rs_prompt.count(" from test") == 1
    belebele = results["samples"]["lrm_belebele_tam_dev"]
    for sample in belebele:  # exemplars come from dev itself, never the item being scored
        prompt = _prompt(sample)
        assert prompt.count("Read the passage and answer the question.") == 3
        assert prompt.count(sample["doc"]["passage"] + "\nQuestion: " + sample["doc"]["question"]) == 1
    assert results["configs"]["lrm_mlic_rs_uig_test"]["num_fewshot"] == 2


def test_every_group_runs_on_a_zoo_model_both_splits_from_the_zoo_data(task_manager, zoo_home, monkeypatch):
    """The whole suite, dev and test, through lm-eval's hf backend on a trained zoo model."""
    for key, value in data_env(zoo_home / "zoo" / "data").items():
        monkeypatch.setenv(key, value)
    results = _evaluate(task_manager, zoo_home / "zoo" / "sft-flan", _whole_suite_and_controls(), limit=2,
                        gen_kwargs="max_gen_toks=16")
    scores = results["results"]
    for split in SPLITS:
        for lang in [*TARGET_LANGUAGES, *CONTROL_LANGUAGES]:  # the languages the zoo has data for
            tasks = task_names(lang, split)
            main = [scores[name][f"{main_metric(name)},none"] for name in tasks]
            assert all(0.0 <= value <= 1.0 for value in main), (lang, split)
            assert math.isclose(scores[group_name(lang, split)]["acc,none"], sum(main) / len(main))
        assert group_name("all", split) in scores
    assert len([name for name in scores if name.startswith("lrm_") and name.count("_") >= 3]) >= 44
