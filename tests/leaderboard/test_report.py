"""`harness report`: the store's tables and figures as files for a paper, written all at once."""

import re

import pytest

from harness import cli
from leaderboard import figures
from tests.leaderboard.test_multilang import multi_store  # noqa: F401 (a fixture)
from tests.leaderboard.test_sweeps import SWEEP, store_trials


@pytest.fixture(autouse=True)
def _only_this_subcommand(monkeypatch):
    """Parse with this area's subcommand alone, so another area's work in progress cannot break it."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"report": cli.SUBCOMMANDS["report"]})


def svg_text(path) -> set[str]:
    """The words an SVG draws (its <text> elements)."""
    return {re.sub(r"<[^>]+>", "", text).strip() for text in re.findall(r"<text[^>]*>(.*?)</text>", path.read_text())}


def test_report_writes_every_table_and_figure(store_url, tmp_path, capsys):
    store_trials(store_url, {(0.2, 0.4): 0.30, (0.8, 0.4): 0.50})
    out = tmp_path / "paper"
    assert cli.main(["report", "--out", str(out), "--store", store_url]) == 0
    assert f"files in {out} (dev, test split)" in capsys.readouterr().out
    tables = sorted(p.name for p in (out / "tables").iterdir())
    for stem in ("table3-test", "models-test", "tam-test", "tel-test", "uig-test", "table3-dev", "models-dev", "tam-dev"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= set(tables), stem
    # The tie groups travel with the tables: TIES (40 of 50 TC items) is not significantly below TIES-SV (41).
    uyghur = (out / "tables" / "uig-test.md").read_text()
    assert "| ties-uig-flan | Merge (TIES) | 70 | <u>80.0</u>† |" in uyghur and "Holm" in uyghur
    assert r"\underline{80.0}$^\dagger$" in (out / "tables" / "uig-test.tex").read_text()
    # Each figure as SVG, PNG and the CSV of what it draws; the SVG names the models and language it shows.
    drawn = svg_text(out / "figures" / "uig-average-test.svg")
    assert {"ties-sv-uig-flan", "ties-uig-flan", "ct-uig", "sft-flan", "base"} <= drawn
    assert any("Uyghur" in text and "test" in text for text in drawn)
    tamil = svg_text(out / "figures" / "tam-average-test.svg")
    assert {"base", "sft-flan"} <= tamil and "ties-sv-uig-flan" not in tamil and any("Tamil" in t for t in tamil)
    assert (out / "figures" / "uig-average-test.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "figures" / "uig-average-test.csv").read_text().splitlines()[0] == "model,score,kind,chance"
    sweep = svg_text(out / "figures" / f"{figures.sweep_figure_name(SWEEP)}.svg")
    assert any(SWEEP.model in text for text in sweep) and {"sft-flan density", "ct-uig density"} & sweep
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_report_of_one_split(store_url, tmp_path):
    out = tmp_path / "paper"
    assert cli.main(["report", "--out", str(out), "--store", store_url, "--split", "dev"]) == 0
    assert sorted(p.name for p in (out / "tables").iterdir()) == [
        "models-dev.csv", "models-dev.md", "models-dev.tex", "table3-dev.csv", "table3-dev.md", "table3-dev.tex",
        "tam-dev.csv", "tam-dev.md", "tam-dev.tex"]
    # The conflict analysis does not depend on the split: ties-sv-uig-flan's statistics are drawn with any.
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "conflicts-slack.csv", "conflicts-slack.png", "conflicts-slack.svg",
        "tam-average-dev.csv", "tam-average-dev.png", "tam-average-dev.svg"]


def test_an_existing_folder_is_refused_and_a_failed_report_leaves_nothing(store_url, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "existing"
    existing.mkdir()
    assert cli.main(["report", "--out", str(existing), "--store", store_url]) == 2
    assert "output folder already exists" in capsys.readouterr().err

    def disk_full(figure):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "to_png", disk_full)
    out = tmp_path / "paper"
    assert cli.main(["report", "--out", str(out), "--store", store_url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness report: error: cannot write the report") and "\n" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_a_store_without_results_or_without_the_split_is_one_line(empty_store_url, tmp_path, capsys):
    from harness.store import ResultStore
    from tests.leaderboard.conftest import result_row

    assert cli.main(["report", "--out", str(tmp_path / "a"), "--store", empty_store_url]) == 2
    assert "holds no results yet" in capsys.readouterr().err
    test_only = f"sqlite:///{tmp_path / 'test-only.db'}"
    store = ResultStore(test_only)
    store.write_task_results([result_row("base", "hash-base", "sib_tam", 0.3)])
    store.engine.dispose()
    assert cli.main(["report", "--out", str(tmp_path / "b"), "--store", test_only, "--split", "dev"]) == 2
    assert "holds no dev results (it has: test)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_report_writes_table5_the_conflict_figures_and_the_similarity_heatmap(multi_store, tmp_path):
    from harness.store import ModelRecord, ResultStore, SweepId, TrialRow, write_similarities, write_sweep_trial
    from tests.leaderboard.test_conflicts import MERGES
    from tests.leaderboard.test_similarity import pairs

    store = ResultStore(multi_store)
    ct_tam = SweepId("ties-tam-flan", "densities")
    for model, langs, recipe, stats in MERGES:  # each merge with its conflict statistics, as a sweep's trial
        store.record_model(ModelRecord(f"h-{model}", model, "merge", (langs,), recipe, stats))
        sweep = ct_tam if langs == "tam" else SweepId(model.split("@")[0], "slack" if "-sv-" in model else "densities")
        write_sweep_trial(store, TrialRow(
            sweep=sweep, trial_model=model, model_hash=f"h-{model}", params={"models.sft-flan.density": model.split("@")[1]},
            recipe=recipe, split="dev", limit=None, score=0.5, lang_scores={langs: 0.5}, scoring_hash="s"))
    write_similarities(store, pairs({("ct-mvf", "ct-uig"): 0.41}))
    store.engine.dispose()
    out = tmp_path / "paper"
    assert cli.main(["report", "--out", str(out), "--store", multi_store, "--split", "test"]) == 0
    # Table 5 over the languages the multi-language merge spans, with its tie groups' note.
    table5 = (out / "tables" / "table5-mvf-uig-test.md").read_text()
    assert "my-two-language-merge" in table5 and "Uyghur" in table5 and "Mongolian" in table5
    assert (out / "tables" / "table5-mvf-uig-test.tex").exists() and (out / "tables" / "table5-mvf-uig-test.csv").exists()
    # Figure 3: one line per language, named in the legend; the TIES-SV slack chart likewise.
    density = svg_text(out / "figures" / "conflicts-density.svg")
    assert {"Uyghur", "Tamil"} <= density and any("per language" in text for text in density)
    assert "Uyghur" in svg_text(out / "figures" / "conflicts-slack.svg")
    assert (out / "figures" / "conflicts-density.csv").read_text().splitlines()[0].startswith("language,")
    # Each sweep's trials by tensor type and by layer, titled with the sweep; a slack sweep by its slack.
    by_type = svg_text(out / "figures" / f"{figures.sweep_figure_name(SweepId('ties-uig-flan', 'densities'))}-conflicts-type.svg")
    assert any("ties-uig-flan:densities" in text for text in by_type) and {"attention", "MLP"} <= by_type
    by_layer = svg_text(out / "figures" / f"{figures.sweep_figure_name(ct_tam)}-conflicts-layer.svg")
    assert any("ties-tam-flan:densities" in text for text in by_layer)
    slack = svg_text(out / "figures" / f"{figures.sweep_figure_name(SweepId('ties-sv-uig-flan', 'slack'))}-conflicts-slack.svg")
    assert any("ties-sv-uig-flan:slack" in text for text in slack)
    # The language vectors' heatmap names the models it compares and the base.
    heatmap = svg_text(out / "figures" / "similarity_base.svg")
    assert {"ct-mvf", "ct-uig", "0.41"} <= heatmap and any("against base" in text for text in heatmap)
    assert (out / "figures" / "similarity_base.png").read_bytes().startswith(b"\x89PNG")
