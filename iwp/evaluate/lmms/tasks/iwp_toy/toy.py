"""lmms-eval task iwp_toy: the first QUESTIONS test-split questions of `python -m iwp.evaluate`, same images,
same prompts, same exact-match scoring (the answer, stripped, must equal the expected word)."""
from __future__ import annotations

import datasets
from lmms_eval.api.task import ConfigurableTask, TaskConfig

from iwp.toy import scenes

QUESTIONS = 60           # python -m iwp.evaluate --questions 60 scores the same questions
SPLIT = "test"


def docs(n: int = QUESTIONS, split: str = SPLIT) -> list[dict]:
    """The questions as documents: image, question, answer, kind (generated exactly as iwp.evaluate does)."""
    images, _, q = scenes.generate(n, scenes.SPLIT_SEEDS[split], kinds=scenes.BENCHMARK_KINDS)
    return [{"question_id": i, "image": im, "question": q.text(i), "answer": q.answer_text(i),
             "kind": scenes.KINDS[int(q.kind[i])]} for i, im in enumerate(scenes.to_pil(images))]


def doc_to_visual(doc: dict) -> list:
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict:
    return {"exact_match": float(results[0].strip() == doc["answer"])}


class ToyTask(ConfigurableTask):
    """Generated in memory rather than loaded from the hub."""

    CONFIG = TaskConfig(task="iwp_toy", output_type="generate_until", test_split="test",
                        doc_to_visual=doc_to_visual, doc_to_text=doc_to_text, doc_to_target="answer",
                        process_results=process_results,
                        metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
                        generation_kwargs={"max_new_tokens": 2, "do_sample": False, "until": []},
                        metadata={"version": 1.0})

    def __init__(self, config: dict | None = None, **kwargs) -> None:
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"}, **kwargs)

    def download(self, dataset_kwargs=None) -> None:
        test = datasets.Dataset.from_list(docs())
        self.dataset = datasets.DatasetDict({"test": test})
        self.dataset_no_image = datasets.DatasetDict({"test": test.remove_columns("image")})
