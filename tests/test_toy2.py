"""Toy v2: scenes and videos, the v2 processor, the training batches, the IWP query knob, the v2 benchmark."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from iwp.baselines import SelectorInput
from iwp.toy import build, scenes2 as S
from iwp.toy.load import prompt


def test_image_questions_name_one_object_and_answer_it():
    a_img, s, q = S.generate(12, 5)
    assert torch.equal(a_img, S.generate(12, 5)[0]) and not torch.equal(a_img, S.generate(12, 6)[0])
    assert a_img.shape == (12, 3, S.IMAGE, S.IMAGE) and S.GRID * S.GRID == 576
    for i in range(12):
        words, kind = q.text(i).split(), S.KINDS[int(q.kind[i])]
        if kind == "digit":
            c, sh = S.COLOR_NAMES.index(words[-2]), S.SHAPES.index(words[-1])
            hit = (s.color[i] == c) & (s.shape[i] == sh) & s.present[i]
            assert hit.sum() == 1 and q.answer_text(i) == str(int(s.digit[i][hit]))
            assert q.relevant[i].tolist() == hit.tolist()
        if kind == "count":
            c = S.COLOR_NAMES.index(words[2])
            assert q.answer_text(i) == str(int(((s.color[i] == c) & s.present[i]).sum()))
    # the repeated shape: one colour-shape pair, several copies, no digit
    rep = s.present[:, S.NEWCOMER + 1:]
    assert (rep.sum(1) >= S.MIN_REPEAT).all() and (s.digit[:, S.NEWCOMER + 1:] == -1).all()
    assert not s.present[:, S.NEWCOMER].any()                       # no newcomer in images


def test_video_newcomer_appears_and_one_digit_changes():
    _, s, q = S.generate(6, 2, frames=S.FRAMES)
    present, digit = s.per_frame()
    for b in range(6):
        t = int(s.appear_t[b])
        assert not present[b, :t, S.NEWCOMER].any() and present[b, t:, S.NEWCOMER].all()
        k, tc = int(s.change_slot[b]), int(s.change_t[b])
        assert (digit[b, :tc, k] == s.digit[b, k]).all() and (digit[b, tc:, k] == s.new_digit[b]).all()
        if S.KINDS[int(q.kind[b])] == "video_change":
            assert q.answer_text(b) == str(int(s.new_digit[b]))
    asked = S.relevant_tokens(s, q.relevant)
    assert asked.shape == (6, S.FRAMES * S.N_TOKENS) and asked.any(1).all()


def test_v2_processor_reproduces_training_rows_for_images_and_videos():
    processor = build.build_processor(version=2)
    images, _, q = S.generate(2, 3)
    texts = [prompt(processor, q.text(i)) for i in range(2)]
    inputs = processor(text=texts, images=S.to_pil(images), padding=True, return_tensors="pt")
    ids, _, labels = S.sequences(q)
    for i in range(2):
        n = 1 + S.N_TOKENS + int(q.lengths[i]) + 1
        assert torch.equal(inputs.input_ids[i][inputs.attention_mask[i].bool()], ids[i, :n])
        assert labels[i, n] == q.answer[i]
    assert torch.allclose(inputs.pixel_values, (images - 0.5) / 0.5)
    frames, _, vq = S.generate(1, 4, frames=S.FRAMES)
    msgs = [{"role": "user", "content": [{"type": "image"}] * S.FRAMES + [{"type": "text", "text": vq.text(0)}]}]
    vin = processor(text=[processor.apply_chat_template(msgs, add_generation_prompt=True)],
                    images=S.to_pil(frames), return_tensors="pt")
    vids, _, _ = S.sequences(vq, S.FRAMES)
    assert torch.equal(vin.input_ids[0], vids[0, :vin.input_ids.shape[1]])


def test_training_batch_and_short_context_forward():
    from iwp.toy import train2
    torch.manual_seed(0)
    model = build.build_model(2)
    gen = torch.Generator().manual_seed(0)
    pixels, ids, labels, targets, asked = train2.batch(2, gen, 2)
    assert asked.shape == (2, 2, S.N_TOKENS) and targets.shape == (2, S.N_TOKENS, 5)
    probe = train2.AttentionProbe(model, 4, question_probe=True)
    loss, kept_ids, kept_asked, picked = train2.short_forward(model, ids, pixels, labels, targets, asked, 24, gen)
    assert kept_ids.shape[1] == 1 + 24 + (ids.shape[1] - 1 - S.N_TOKENS) and kept_asked.shape == (2, 2, 24)
    assert picked.shape == (2, 24) and (kept_ids[:, 1:25] == S.IMAGE_TOKEN).all()
    # every asked object token survives the cut (objects are kept first)
    assert (kept_asked.sum(-1) == asked.sum(-1)).all()
    attn = probe.loss(kept_ids, kept_asked)
    assert torch.isfinite(loss) and torch.isfinite(attn) and attn > 0
    # the question probe's targets are the words of each turn's own question; video questions have no digit
    vpix, vids, vlab, vtargets, vasked = train2.batch(1, gen, 3, S.FRAMES)
    model(input_ids=vids, pixel_values=vpix)
    assert torch.isfinite(probe.loss(vids, vasked))


def test_iwp_query_knob():
    from iwp import selectors
    torch.manual_seed(0)
    inp = SelectorInput(q=torch.randn(2, 5, 8), k=torch.randn(1, 40, 8), v=torch.randn(1, 40, 8))
    last = selectors.iwp(inp, 6, query="last")
    only_last = SelectorInput(q=inp.q[:, -1:], k=inp.k, v=inp.v)
    assert torch.equal(last, selectors.iwp(only_last, 6, query="text"))
    assert not torch.equal(last, selectors.iwp(inp, 6, query="text"))      # the knob changes the picks here
    assert torch.equal(selectors.iwp(inp, 6), selectors.iwp(inp, 6, query="text"))
    with pytest.raises(ValueError):
        selectors.iwp(inp, 6, query="first")
    import iwp
    with pytest.raises(ValueError):
        iwp.apply(build.build_model(2), query="first")


def test_benchmark_v2_small_run(tmp_path):
    """Both tables, the oracle and the paired differences, on a random-weight v2 model (hook: transformers 5.17)."""
    from iwp.evaluate import toy2
    torch.manual_seed(0)
    path = tmp_path / "m"
    build.build_model(2).save_pretrained(path)
    build.build_processor(version=2).save_pretrained(path)
    out = tmp_path / "b.json"
    toy2.main(["--model", str(path), "--images", "2", "--videos", "0", "--image-batch", "2",
               "--methods", "iwp", "oracle_asked", "--ratios", "0.111", "--json", str(out),
               "--markdown", str(tmp_path / "b.md")])
    result = json.loads(out.read_text())
    assert result["complete"] and result["layer"] == 2
    rows = {(r["table"], r["method"], r["keep_ratio"], r["kind"]): r for r in result["results"]}
    for table in ("single", "multi"):
        assert rows[table, "full", 1.0, "all"]["n"] == 2
        assert "diff_vs_iwp" in rows[table, "oracle_asked", 0.111, "all"]
        assert "diff_vs_iwp" not in rows[table, "iwp", 0.111, "all"]


def test_evaluate_seed_draws_a_fresh_split():
    from iwp.evaluate import toy as evaluate
    processor = build.build_processor()
    named = evaluate.prepare(processor, "test", 4, 4)[0]
    fresh = evaluate.prepare(processor, "test", 4, 4, seed=123)[0]
    assert torch.equal(evaluate.prepare(processor, "test", 4, 4, seed=123)[0]["inputs"]["pixel_values"],
                       fresh["inputs"]["pixel_values"])
    assert not torch.equal(named["inputs"]["pixel_values"], fresh["inputs"]["pixel_values"])


def test_question_probe_targets_are_each_turns_own_words():
    from iwp.toy import train2
    model = build.build_model(2)
    probe = train2.AttentionProbe(model, 4, question_probe=True)
    gen = torch.Generator().manual_seed(1)
    s = S.sample_scenes(1, gen)
    qs = [S.sample_questions(s, gen, kinds=("digit",)), S.sample_questions(s, gen, kinds=("color",))]
    ids, _, _ = S.sequences(qs)
    sep = (ids == S.SEP).nonzero()[:, 1].view(1, 2)
    captured = {}
    orig = torch.nn.functional.cross_entropy

    def spy(logits, target, **kw):
        captured.setdefault("targets", []).append(target.tolist())
        return orig(logits, target, **kw)
    torch.nn.functional.cross_entropy = spy
    try:
        probe._question_loss(torch.zeros(1, 2, model.config.text_config.hidden_size), ids, sep, S.N_TOKENS)
    finally:
        torch.nn.functional.cross_entropy = orig
    colour, shape, digit = captured["targets"]
    words0, words1 = qs[0].text(0).split(), qs[1].text(0).split()
    assert colour == [S.COLOR_NAMES.index(words0[-2]), -1] and shape == [S.SHAPES.index(words0[-1]), -1]
    assert digit == [-1, int(words1[-1])]


def test_word_probe_targets_the_tokens_showing_each_question_word():
    """WordProbe: each colour / shape / digit word of a question (not an answer) is a query, and its targets
    are the visual tokens whose object has that attribute; with the kept tokens of a short context too."""
    from iwp.toy import train2
    torch.manual_seed(0)
    model = build.build_model(2).train()
    gen = torch.Generator().manual_seed(1)
    pixels, ids, labels, targets, asked = train2.batch(2, gen, 3)
    words = train2.WordProbe(model, 1)
    loss, kept_ids, kept_asked, picked = train2.short_forward(model, ids, pixels, labels, targets, asked, 24, gen)
    attrs = train2.visual_attributes(targets, 2, picked)
    assert attrs.shape == (2, 24, 3)
    full = train2.visual_attributes(targets, 2, None)
    assert torch.equal(attrs, full.gather(1, picked[..., None].expand(-1, -1, 3)))
    b, p, target = train2.WordProbe.targets(kept_ids, attrs)
    assert b.numel() > 0
    for i in range(b.numel()):
        word = S.WORDS[int(kept_ids[b[i], p[i]])]
        assert S.WORDS[int(kept_ids[b[i], p[i] - 1])] != "<sep>"                    # a question word, no answer
        j, v = ((0, S.COLOR_NAMES.index(word)) if word in S.COLOR_NAMES else
                (1, S.SHAPES.index(word)) if word in S.SHAPES else (2, S.DIGITS.index(word)))
        assert torch.equal(target[i], attrs[b[i], :, j] == v)
    value = words.loss(kept_ids, attrs)
    assert torch.isfinite(value) and value > 0
    value.backward()
    assert model.model.language_model.layers[1].self_attn.q_proj.weight.grad.abs().sum() > 0
    # a row without question words gives 0, not NaN
    model(input_ids=ids, pixel_values=pixels)
    no_words = torch.where(ids >= S.VOCAB[S.COLOR_NAMES[0]], S.VOCAB["what"], ids)
    assert words.loss(no_words, full).item() == 0.0
