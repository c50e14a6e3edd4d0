"""`harness zoo`: the embedded default, a family of tiny Llama models trained on the CPU.

    harness zoo build [--dest DIR] [--force]   train what is missing or stale (about 10 minutes on 2 cores)
    harness zoo info [--dest DIR]              where the zoo is, whether it is current, its models'
                                               training and held-out losses

Other commands need not wait for the whole zoo: they build only the zoo models they read
(harness/build.py, `build_zoo(only=...)`).

The zoo mirrors the paper's pipeline on synthetic languages: `base` is pre-trained on English-like
text, `sft-flan` fine-tuned on English task data, `ct-<lang>` continued on text in the language's
real script (1/4 English replay), `ctsft-<lang>-flan` / `-mt` fine-tuned from ct on English /
translated task data; `lora-<lang>` (INDV) and `lora-comb` (COMB) are the second paper's LoRA
adapters over base, on each language's / every language's translated task data. `build_zoo` also
writes synthetic evaluation data for all seven languages and the English control (`eng`,
evaluated only) into `<dest>/data`. Modules: lexicon (the
languages), generators (English text and task items), corpora (training text per stage),
tokenizer, train, adapters (the LoRA adapters), heldout (held-out loss per language), evaldata,
build (manifest and caching).
Heavy imports (torch, transformers) happen only when something must be trained.
"""

from pathlib import Path

from harness.zoo.config import ZooConfig, zoo_models

__all__ = ["build_zoo", "zoo_is_current", "ZooConfig", "zoo_models", "add_arguments", "run"]


def build_zoo(dest: Path, progress: bool = True, force: bool = False, only: list[str] | None = None) -> Path:
    """Build every zoo model into dest/<id> and the synthetic task data into dest/data.

    Returns at once when the manifest says the zoo is current and every folder is present;
    otherwise (re)builds only what is missing or stale. `force` rebuilds everything. `only`: just
    these models and their ancestors (and the tokenizer and the data), as commands that need a few
    zoo models do (harness/build.py).
    """
    from harness.zoo.build import build, usable_cores

    return build(Path(dest), ZooConfig(), progress=progress, force=force, workers=usable_cores(), only=only)


def zoo_is_current(dest: Path) -> bool:
    from harness.zoo.build import stale_artifacts

    return not stale_artifacts(Path(dest).expanduser().resolve(), ZooConfig())


# ---- the CLI ------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)
    build_parser = actions.add_parser("build", help="train the zoo models and write its task data (cached)")
    build_parser.add_argument("--dest", type=Path, default=None, help="zoo folder (default: $HARNESS_HOME/zoo)")
    build_parser.add_argument("--force", action="store_true", help="rebuild everything, even if current")
    info_parser = actions.add_parser("info", help="show where the zoo is, whether it is current, its models")
    info_parser.add_argument("--dest", type=Path, default=None, help="zoo folder (default: $HARNESS_HOME/zoo)")


def run(args) -> int:
    from harness.paths import zoo_dir

    dest = (args.dest or zoo_dir()).expanduser().resolve()
    if args.zoo_action == "build":
        from harness.zoo.build import stale_artifacts

        todo = "everything" if args.force else ", ".join(stale_artifacts(dest, ZooConfig()))
        if not todo:
            print(f"zoo is current: {dest}")
            return 0
        print(f"building the zoo into {dest} ({todo})")
        build_zoo(dest, progress=True, force=args.force)
        print(f"zoo ready: {dest}")
        return 0
    print(zoo_info(dest))
    return 0


def zoo_info(dest: Path, config: ZooConfig = ZooConfig()) -> str:
    """A short report: folder, whether current, and each model's size, training and held-out losses.

    Held-out losses (nats per token, heldout.py) are on English and on the model's own language,
    with base's loss on that language beside it: a ct model that learnt its language is well below.
    """
    from harness.zoo.build import read_manifest, stale_artifacts

    stale = stale_artifacts(dest, config)
    records = read_manifest(dest).get("artifacts", {})
    base_losses = records.get("base", {}).get("heldout_loss", {})
    lines = [f"zoo folder: {dest}",
             "status: current" if not stale else
             f"status: {len(stale)} of {2 + len(zoo_models(config))} artifacts missing or stale "
             f"(run `harness zoo build`, or any command that needs them builds them)"]
    lines.append(f"{'model':<18} {'size':>8} {'steps':>6} {'train loss':>15} {'loss en':>8} {'loss lang':>9} "
                 f"{'base on lang':>12}  state")
    for model in zoo_models(config):
        if model.kind == "lora":
            continue  # listed below, with their training times
        weights = dest / model.id / "model.safetensors"
        size = f"{weights.stat().st_size / 2**20:.1f} MiB" if weights.is_file() else "-"
        record = records.get(model.id, {})
        loss = f"{record['first_loss']:.2f} -> {record['final_loss']:.2f}" if "final_loss" in record else "-"
        heldout = record.get("heldout_loss", {})
        own = model.lang if model.kind != "pretrain" and model.lang != "en" else None
        lines.append(f"{model.id:<18} {size:>8} {record.get('steps', '-'):>6} {loss:>15} "
                     f"{_loss(heldout.get('en')):>8} {_loss(heldout.get(own)):>9} {_loss(base_losses.get(own)):>12}  "
                     f"{'stale' if model.id in stale else 'ok'}")
    lines += _adapter_lines(dest, config, records, stale)
    lines.append(f"task data: {dest / 'data'} ({'stale' if 'data' in stale else 'ok'})")
    return "\n".join(lines)


def _adapter_lines(dest: Path, config: ZooConfig, records: dict, stale: list[str]) -> list[str]:
    """The LoRA adapters over base: rank, training wall time, steps, examples, losses."""
    from harness.zoo.config import adapter_models

    lines = [f"{'adapter':<18} {'rank':>4} {'train s':>8} {'steps':>6} {'examples':>8} {'train loss':>15} "
             f"{'loss en':>8} {'loss lang':>9}  state"]
    for model in adapter_models(config):
        record = records.get(model.id, {})
        loss = f"{record['first_loss']:.2f} -> {record['final_loss']:.2f}" if "final_loss" in record else "-"
        heldout = record.get("heldout_loss", {})
        own = heldout.get(model.lang)
        if own is None and heldout:  # lora-comb: the mean over the languages it trained on
            own = sum(heldout[lang] for lang in config.languages) / len(config.languages)
        seconds = f"{record['train_seconds']:.1f}" if "train_seconds" in record else "-"
        lines.append(f"{model.id:<18} {config.lora.rank:>4} {seconds:>8} {record.get('steps', '-'):>6} "
                     f"{record.get('examples', '-'):>8} {loss:>15} {_loss(heldout.get('en')):>8} {_loss(own):>9}  "
                     f"{'stale' if model.id in stale else 'ok'}")
    return lines


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
