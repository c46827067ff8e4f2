"""The embedded toy model: scene generator, tokenizer/processor, offline loading, answers."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from iwp.toy import build, scenes
from iwp.toy.load import DEFAULT_PATH, answer, load, prompt


def test_scenes_are_deterministic_and_consistent():
    a_img, a_s, a_q = scenes.generate(16, 5)
    b_img, _, b_q = scenes.generate(16, 5)
    assert torch.equal(a_img, b_img) and torch.equal(a_q.ids, b_q.ids)
    assert not torch.equal(a_img, scenes.generate(16, 6)[0])
    assert a_img.shape == (16, 3, scenes.IMAGE, scenes.IMAGE)
    for i in range(16):  # "what number is on the C S" names exactly one object and answers its digit
        words = a_q.text(i).split()
        if scenes.KINDS[int(a_q.kind[i])] == "digit":
            c, s = scenes.COLOR_NAMES.index(words[-2]), scenes.SHAPES.index(words[-1])
            hit = (a_s.color[i] == c) & (a_s.shape[i] == s) & a_s.present[i]
            assert hit.sum() == 1 and a_q.answer_text(i) == str(int(a_s.digit[i][hit]))
    targets = scenes.token_targets(a_s)
    assert (targets[..., 0] < len(scenes.COLORS)).sum(1).tolist() == a_s.present.sum(1).tolist()


def test_processor_reproduces_training_rows():
    processor = build.build_processor()
    images, _, q = scenes.generate(4, 3)
    texts = [prompt(processor, q.text(i)) for i in range(4)]
    inputs = processor(text=texts, images=scenes.to_pil(images), padding=True, return_tensors="pt")
    ids, _, labels = scenes.sequences(q)
    for i in range(4):
        n = 1 + scenes.GRID ** 2 + int(q.lengths[i]) + 1           # up to and including <sep>
        assert torch.equal(inputs.input_ids[i][inputs.attention_mask[i].bool()], ids[i, :n])
        assert labels[i, n] == q.answer[i]
    assert torch.allclose(inputs.pixel_values, (images - 0.5) / 0.5)


def test_tokenizer_normalises_typed_questions():
    tok = build.build_tokenizer()
    assert tok.decode(tok("What's the COLOUR, of the shape with the number 3?").input_ids) == \
        "what <unk> the colour of the shape with the number 3"


def test_video_objects_move_and_keep_identity():
    frames, s = scenes.video(1, frames=3)
    assert len(frames) == 3 and frames[0].size == (scenes.IMAGE, scenes.IMAGE)
    assert frames[0].tobytes() != frames[2].tobytes()


@pytest.fixture(scope="module")
def toy():
    return load()


def test_loads_offline_from_assets(toy):
    model, processor = toy
    assert DEFAULT_PATH.is_dir()
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert sum(f.stat().st_size for f in DEFAULT_PATH.iterdir()) <= 40 * 2**20


def test_answers_generated_scenes(toy):
    model, processor = toy
    _, s, q = scenes.generate(12, scenes.SPLIT_SEEDS["test"])
    images = scenes.to_pil(scenes.render(s))
    answers = [answer(model, processor, images[i], q.text(i)) for i in range(12)]
    truth = [q.answer_text(i) for i in range(12)]
    counts = [i for i in range(12) if scenes.KINDS[int(q.kind[i])] == "count"]
    assert counts and answers[counts[0]] == truth[counts[0]]           # one answer, exactly right
    assert sum(a == t for a, t in zip(answers, truth)) / 12 >= 0.6      # far above chance (about 0.25)
