"""The zoo's models carry the skills their names claim, measured through `harness eval` on dev.

Floors, not targets (issue 16): twice chance on topic classification (7 topics: chance 1/7) for
the SFT models on the task data they were tuned on, and base well below them. Dev splits only, few
items, the in-process backend: a cheap check that fails when a change to the zoo leaves the SFT
model at chance. Reading comprehension, response selection and math are not floored here: the
zoo's models do not reach twice chance on them (the README's tables say by how much).
"""

import pytest

from harness.store import ResultStore

TWICE_CHANCE_TC = 2 / 7
pytestmark = pytest.mark.slow


def dev_accuracy(harness_cli, store: str, model: str, tasks: list[str]) -> dict[str, float]:
    code, _, err = harness_cli("eval", "--model", model, "--split", "dev", "--backend", "hf",
                               "--store", store, "--tasks", *tasks)
    assert code == 0, err
    rows = ResultStore(store).results(split="dev")
    rows = rows[(rows["model"] == model) & (rows["metric"] == "acc")]
    return dict(zip(rows["task"], rows["value"]))


def test_sft_flan_classifies_english_topics_and_base_does_not(use_zoo_home, harness_cli, tmp_path):
    store = f"sqlite:///{tmp_path / 'skills.db'}"
    tasks = ["lrm_sib_eng_dev", "lrm_mlic_tc_eng_dev"]
    sft = dev_accuracy(harness_cli, store, "sft-flan", tasks)
    base = dev_accuracy(harness_cli, store, "base", tasks)
    for task in tasks:
        assert sft[task] >= TWICE_CHANCE_TC, (task, sft)
        # base picks up a little from text that names its topic ("big news in sports"), but the
        # skill is the SFT model's
        assert sft[task] - base[task] >= 0.3, (task, sft, base)


def test_the_upper_bound_classifies_topics_in_its_language(use_zoo_home, harness_cli, tmp_path):
    store = f"sqlite:///{tmp_path / 'skills.db'}"
    scores = dev_accuracy(harness_cli, store, "ctsft-uig-mt", ["lrm_mlic_tc_uig_dev"])
    assert scores["lrm_mlic_tc_uig_dev"] >= TWICE_CHANCE_TC, scores
