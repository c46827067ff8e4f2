"""Train toy model v2 (576 tokens per image, 8-frame videos): `python -m iwp.toy.train2 --out DIR` (one GPU).

The recipe, fixed before any selector was run on the model: every step one batch of images and one batch of
8-frame videos drawn on the GPU from a generator seeded with --seed (the val/test splits use their own
seeds, drawn on CPU, and are never trained on), `--turns` question-answer turns per scene, AdamW with linear
warm-up and cosine decay, bf16 autocast, and training-only linear probes on the projected visual tokens
(colour, shape, digit of the object in the patch, row, column; not saved), optionally attention supervision
(--attn: <sep> onto the asked objects; --gather-layer: <sep> onto its question's words; --word-layer: each
question word onto the visual tokens showing it). With --time-budget the number of
steps is fixed at step 100 (from the rate of steps 50-100) to fit the budget. At the end: full-token accuracy per kind on the test split,
then model + processor + train_report.json in --out.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from . import build, scenes2 as S
from .train import AuxHeads, lr_at

AUX_CLASSES = (len(S.COLORS) + 1, len(S.SHAPES) + 1, 11, S.GRID, S.GRID)


class Aux(AuxHeads):
    """v1's probes with v2's classes and token count."""

    def __init__(self, dim: int):
        torch.nn.Module.__init__(self)
        self.proj = torch.nn.Linear(dim, sum(AUX_CLASSES))

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.proj(feats.reshape(targets.shape[0], S.N_TOKENS, -1).float()).split(AUX_CLASSES, -1)
        return sum(torch.nn.functional.cross_entropy(lg.flatten(0, 1), t.flatten())
                   for lg, t in zip(logits, targets.unbind(-1)))


def _grid(n: int, device) -> torch.Tensor:
    idx = torch.arange(S.N_TOKENS, device=device)
    return torch.stack([idx // S.GRID, idx % S.GRID], -1).expand(n, -1, -1)


def batch(n: int, gen: torch.Generator, turns: int, frames: int = 1):
    """(pixels in [-1, 1], ids, labels, probe targets, asked tokens [n, turns, F*N]) for n scenes (videos
    when frames > 1)."""
    s = S.sample_scenes(n, gen, frames)
    images = S.render(s)
    qs = [S.sample_questions(s, gen) for _ in range(turns)]
    ids, _, labels = S.sequences(qs, frames)
    targets = torch.cat([S.token_targets(s), _grid(images.shape[0], images.device)], -1)
    asked = torch.stack([S.relevant_tokens(s, q.relevant) for q in qs], 1)
    return (images - 0.5) / 0.5, ids, labels, targets, asked


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid entries; 0 (not NaN) when a batch has none (e.g. only 'which shape appears')."""
    return torch.where(valid, x, 0).sum() / valid.sum().clamp(min=1)


def _rope(t: torch.Tensor, c: torch.Tensor, s_: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return t * c + torch.cat([-t[..., half:], t[..., :half]], -1) * s_


def _attention_ce(logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of attention logits [..., K] onto the target keys (any of them), over the allowed keys;
    the mean over queries that have a target."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    hit = logits.masked_fill(~target, float("-inf")).logsumexp(-1)
    return _masked_mean(-(hit - logits.logsumexp(-1)), target.any(-1))


def _attribute_words(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: which attribute it names (0 colour, 1 shape, 2 digit; -1 none) and its value in that class."""
    kind, value = torch.full_like(ids, -1), torch.zeros_like(ids)
    for j, words in enumerate((S.COLOR_NAMES, S.SHAPES, S.DIGITS)):
        first = S.VOCAB[words[0]]
        hit = (ids >= first) & (ids < first + len(words))
        kind, value = torch.where(hit, j, kind), torch.where(hit, ids - first, value)
    return kind, value


class _Head0:
    """Head 0 of one decoder layer, seen from the training loop: a pre-hook keeps the layer's input of each
    training forward; pop() takes the last one."""

    def __init__(self, layer):
        self.layer, self.captured = layer, []
        layer.register_forward_pre_hook(self._capture, with_kwargs=True)
        self.d = layer.self_attn.head_dim

    def _capture(self, module, args, kwargs):
        if module.training:
            self.captured.append((args[0] if args else kwargs["hidden_states"], kwargs["position_embeddings"]))

    def pop(self, batch: int):
        """(x, q, k) of the last captured forward: the attention's normalised input [B, L, D], and functions
        q(rows, positions) / k(rows, positions) giving this head's RoPE'd float32 queries / keys there (rows and
        positions index [B, L])."""
        hidden, (cos, sin) = self.captured.pop()
        x = self.layer.input_layernorm(hidden)
        cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)

        def at(proj):
            return lambda rows, positions: _rope(proj(x[rows, positions])[..., :self.d],
                                                 cos[rows, positions], sin[rows, positions]).float()
        return x, at(self.layer.self_attn.q_proj), at(self.layer.self_attn.k_proj)


class AttentionProbe:
    """Training-only attention supervision: at each <sep> (where an answer is predicted), head 0 of decoder
    layer `layer` is taught to put its attention over the visual tokens on the tokens of the objects the
    question asks about (a cross-entropy on that head's RoPE'd q.k logits). The answer loss alone left the
    language model on its answer-prior plateau for a whole first run (1288 steps); this gives the retrieval
    circuit a direct signal. It is a layer after the benchmark's K = 2, so layer 2 is never shaped directly."""

    def __init__(self, model, layer: int, question_probe: bool = False, gather_layer: int | None = None):
        layers = model.model.language_model.layers
        self.head = _Head0(layers[layer])
        # optional first hop: at each <sep>, head 0 of `gather_layer` is taught to attend to the content words
        # (colour, shape, digit) of its own question, so the answer position carries the question by layer 4
        self.gather = _Head0(layers[gather_layer]) if gather_layer is not None else None
        # optional: a linear probe on <sep> for the question's colour, shape and digit words
        dim = model.config.text_config.hidden_size
        self.question_head = torch.nn.Linear(dim, len(S.COLORS) + len(S.SHAPES) + 10) if question_probe else None

    def gather_loss(self, ids: torch.Tensor, n_vis: int) -> torch.Tensor:
        """Cross-entropy of `gather_layer` head 0's causal attention at each <sep> onto its question's words."""
        B, L = ids.shape
        _, q_at, k_at = self.gather.pop(B)
        sep = (ids == S.SEP).nonzero()[:, 1].view(B, -1)                     # [B, T]
        T = sep.shape[1]
        ar = torch.arange(B, device=ids.device)[:, None]
        q, k = q_at(ar, sep), k_at(slice(None), slice(None))                             # [B, T, d], [B, L, d]
        logits = (q @ k.transpose(1, 2)) / self.gather.d ** 0.5                         # [B, T, L]
        pos = torch.arange(L, device=ids.device)[None, None]
        turn = torch.cumsum(ids == S.EOS, 1)                                             # question t in turn t
        content = _attribute_words(ids)[0] >= 0                                          # colour, shape, digit words
        target = content[:, None] & (turn[:, None] == torch.arange(T, device=ids.device)[None, :, None]) \
            & (pos > n_vis) & (pos < sep[..., None])
        return _attention_ce(logits, target, allowed=pos <= sep[..., None])

    def loss(self, ids: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
        B, T, n_vis = asked.shape
        x, q_at, k_at = self.head.pop(B)
        sep = (ids == S.SEP).nonzero()[:, 1].view(B, T)                      # each row has `turns` <sep>s
        ar = torch.arange(B, device=ids.device)[:, None]
        q, k = q_at(ar, sep), k_at(slice(None), slice(1, 1 + n_vis))                  # [B, T, d], [B, N, d]
        loss = _attention_ce((q @ k.transpose(1, 2)) / self.head.d ** 0.5, asked)     # [B, T, N] logits
        if self.question_head is not None:
            loss = loss + self._question_loss(x[ar, sep], ids, sep, n_vis)
        if self.gather is not None:
            loss = loss + self.gather_loss(ids, n_vis)
        return loss

    def _question_loss(self, x_sep: torch.Tensor, ids: torch.Tensor, sep: torch.Tensor, n_vis: int) -> torch.Tensor:
        """Cross-entropy of the probe on <sep> for the colour, shape and digit words of its own question (the
        run-2 diagnosis: the question never reached <sep>); words a question does not have are ignored."""
        B, L = ids.shape
        pos = torch.arange(L, device=ids.device)[None]
        turn = torch.cumsum(ids == S.EOS, 1)                                   # question t lies in turn t
        kind, value = _attribute_words(ids)
        logits = self.question_head(x_sep.float()).split([len(S.COLORS), len(S.SHAPES), 10], -1)
        loss = 0.0
        for j, lg in enumerate(logits):
            targets = []
            for t in range(sep.shape[1]):
                mine = (turn == t) & (pos > n_vis) & (pos < sep[:, t:t + 1]) & (kind == j)
                targets.append(torch.where(mine, value, -1).max(1).values)
            target = torch.stack(targets, 1)                                     # [B, T], -1: none
            if (target >= 0).any():                  # video questions carry no digit word, for one
                loss = loss + torch.nn.functional.cross_entropy(lg.flatten(0, 1), target.flatten(), ignore_index=-1)
        return loss


def visual_attributes(targets: torch.Tensor, n: int, picked: torch.Tensor | None) -> torch.Tensor:
    """[n, visual tokens, 3]: colour, shape, digit of the object on each (kept) visual token, frames in order
    (len(COLORS), len(SHAPES), 10 where there is none); targets as batch() returns them ([n*F, N, 5])."""
    attrs = targets[..., :3].reshape(n, -1, 3)
    return attrs if picked is None else attrs.gather(1, picked[..., None].expand(-1, -1, 3))


class WordProbe:
    """Training-only supervision where the question's words sit: at each colour, shape or digit word of a
    question, head 0 of decoder layer `layer` is taught to attend over the visual tokens to those showing
    that attribute (a cross-entropy on the head's RoPE'd q.k logits). The CPU diagnosis behind it: with the
    word itself as the query this match is learnt in about 100 steps, while a head at <sep>, which must first
    gather the question, stayed spread over all objects in every variant tried (assets/benchmarks/
    toy2-train.json). Use a layer below the benchmark's K = 2 or after it; layer 2 itself is never shaped."""

    def __init__(self, model, layer: int):
        self.head = _Head0(model.model.language_model.layers[layer])

    @staticmethod
    def targets(ids: torch.Tensor, attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows b, positions p, target [P, visual tokens]) of every question word naming an attribute."""
        L, n_vis = ids.shape[1], attrs.shape[1]
        kind, value = _attribute_words(ids)
        prev = torch.cat([ids[:, :1], ids[:, :-1]], 1)
        pos = torch.arange(L, device=ids.device)[None]
        b, p = ((kind >= 0) & (pos > n_vis) & (prev != S.SEP)).nonzero(as_tuple=True)   # question words, not answers
        j = kind[b, p]
        target = attrs[b].gather(2, j[:, None, None].expand(-1, n_vis, 1))[..., 0] == value[b, p][:, None]
        return b, p, target

    def loss(self, ids: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        n_vis = attrs.shape[1]
        _, q_at, k_at = self.head.pop(ids.shape[0])
        b, p, target = self.targets(ids, attrs)
        if b.numel() == 0:
            return torch.zeros((), device=ids.device)
        q, k = q_at(b, p), k_at(slice(None), slice(1, 1 + n_vis))                          # [P, d], [B, n_vis, d]
        logits = torch.einsum("pd,pnd->pn", q, k[b]) / self.head.d ** 0.5
        return _attention_ce(logits, target)


@torch.no_grad()
def accuracy(model, n: int, seed: int, frames: int, chunk: int = 50, kinds=None) -> dict[str, float]:
    """First-answer-token accuracy per kind with every visual token, on n scenes of the split `seed` (CPU-drawn)."""
    dev = next(model.parameters()).device
    images, s, q = S.generate(n, seed, kinds=kinds, frames=frames)
    ids, _, _ = S.sequences(q, frames)
    sep = 1 + S.N_TOKENS * frames + q.lengths
    correct, total = torch.zeros(len(S.KINDS)), torch.zeros(len(S.KINDS))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        px = ((images[a * frames:b * frames] - 0.5) / 0.5).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = model(input_ids=ids[a:b].to(dev), pixel_values=px).logits
        pred = logits[torch.arange(b - a, device=dev), sep[a:b].to(dev)].argmax(-1).cpu()
        ok = (pred == q.answer[a:b]).float()
        correct.index_add_(0, q.kind[a:b], ok)
        total += torch.bincount(q.kind[a:b], minlength=len(S.KINDS)).float()
    return {k: round(float(c / t), 4) for k, c, t in zip(S.KINDS, correct, total) if t > 0}


def short_forward(model, ids, pixels, labels, targets, asked, keep: int, gen: torch.Generator):
    """The LM loss on a shortened context (curriculum): per frame only `keep` visual tokens reach the
    language model, every object token first and random background tokens for the rest, at their original
    positions (as the pruning hook keeps them). Returns (loss, ids and asked mask of the kept sequence, the kept
    visual tokens' indices [B, F*keep])."""
    B, L = ids.shape
    n_vis = asked.shape[-1]
    frames = n_vis // S.N_TOKENS
    feats = model.model.get_image_features(pixel_values=pixels)
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
    emb = model.get_input_embeddings()(ids)
    emb = torch.cat([emb[:, :1], feats.reshape(B, n_vis, -1).to(emb.dtype), emb[:, 1 + n_vis:]], 1)
    is_object = (targets[..., 0] < len(S.COLORS)).reshape(B, frames, S.N_TOKENS)
    score = torch.rand(B, frames, S.N_TOKENS, device=ids.device, generator=gen) + 2.0 * is_object
    picked = score.topk(keep, dim=-1).indices.sort(-1).values                       # [B, F, keep]
    picked = (picked + S.N_TOKENS * torch.arange(frames, device=ids.device)[None, :, None]).flatten(1)
    text = torch.arange(1 + n_vis, L, device=ids.device).expand(B, -1)
    idx = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=ids.device), 1 + picked, text], 1)
    emb = emb.gather(1, idx[..., None].expand(-1, -1, emb.shape[-1]))
    out = model.model.language_model(inputs_embeds=emb, position_ids=idx)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    logits = model.lm_head(hidden[:, :-1]).float()
    lab = labels.gather(1, idx)[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), lab.flatten(), ignore_index=-100)
    return loss, ids.gather(1, idx), asked.gather(2, picked[:, None].expand(-1, asked.shape[1], -1)), picked


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="toy-lvlm-v2")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=128, help="images per step")
    p.add_argument("--video-batch", type=int, default=16, help="8-frame videos per step")
    p.add_argument("--turns", type=int, default=8, help="question-answer turns per scene")
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aux", type=float, default=0.5, help="weight of the training-only token probes")
    p.add_argument("--attn", type=float, default=1.0, help="weight of the training-only attention supervision")
    p.add_argument("--attn-layer", type=int, default=4)
    p.add_argument("--gather-layer", type=int, default=None,
                   help="also supervise this layer's head 0 at <sep> to attend to the question's words")
    p.add_argument("--word-layer", type=int, default=None,
                   help="also supervise this layer's head 0 at each question word (colour, shape, digit) to attend "
                        "to the visual tokens showing it")
    p.add_argument("--word", type=float, default=1.0, help="weight of the --word-layer supervision")
    p.add_argument("--question-probe", action="store_true",
                   help="also a training-only linear probe on <sep> (at --attn-layer) for the question's words")
    p.add_argument("--short-steps", type=int, default=0,
                   help="curriculum: for this many steps the LM sees only --short-keep visual tokens per frame")
    p.add_argument("--short-keep", type=int, default=48, help="objects first, then random background")
    p.add_argument("--short-frac", type=float, default=0,
                   help="with --time-budget: this fraction of the budgeted steps is short-context (overrides "
                        "--short-steps; a full-context step is planned as --full-cost short steps)")
    p.add_argument("--full-cost", type=float, default=5.0)
    p.add_argument("--init", default=None, help="continue from this saved v2 model (warm start)")
    p.add_argument("--time-budget", type=float, default=0,
                   help="seconds; if >0, cut --steps to fit (decided at step 100)")
    p.add_argument("--eval-n", type=int, default=1000, help="test images at the end")
    p.add_argument("--eval-videos", type=int, default=400, help="test videos at the end")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--val-every", type=int, default=500)
    args = p.parse_args(argv)

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build.build_model(2)
    if args.init:
        from transformers import LlavaForConditionalGeneration
        init = LlavaForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        model.load_state_dict(init.state_dict())
    model = model.to(dev).train()
    probe = AttentionProbe(model, args.attn_layer, args.question_probe, args.gather_layer) if args.attn > 0 else None
    words = WordProbe(model, args.word_layer) if args.word_layer is not None else None
    print(f"params {sum(x.numel() for x in model.parameters()) / 1e6:.2f} M on {dev}", flush=True)
    aux = Aux(model.config.text_config.hidden_size).to(dev)
    captured = []
    model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.append(o) if m.training else None)
    params = list(model.parameters()) + list(aux.parameters())
    if probe is not None and probe.question_head is not None:
        probe.question_head.to(dev)
        params += list(probe.question_head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05, fused=dev == "cuda")
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    log = []

    def say(msg: str) -> None:
        print(msg, flush=True)
        log.append(msg)

    steps, t0, running, step = args.steps, time.time(), [], 0
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, args.lr, args.warmup)
        opt.zero_grad(set_to_none=True)
        losses = []
        for n, frames in ((args.batch, 1), (args.video_batch, S.FRAMES)):
            if n == 0:
                continue
            pixels, ids, labels, targets, asked = batch(n, gen, args.turns, frames)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                if step < args.short_steps:
                    loss, kept_ids, kept_asked, picked = short_forward(model, ids, pixels, labels, targets, asked,
                                                                       args.short_keep, gen)
                else:  # right padding only and a causal mask: no attention mask needed (flash attention)
                    loss = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
                    kept_ids, kept_asked, picked = ids, asked, None
                aux_loss = aux(captured.pop(), targets)
                attn_loss = probe.loss(kept_ids, kept_asked) if probe else torch.zeros((), device=dev)
                if words is not None:
                    attn_loss = attn_loss + args.word * words.loss(kept_ids, visual_attributes(targets, n, picked))
            (loss + args.aux * aux_loss + args.attn * attn_loss).backward()
            losses += [loss.detach(), aux_loss.detach(), attn_loss.detach()]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running.append(torch.stack(losses))
        step += 1
        if step == 50:
            t50 = time.time()
        if step == 100 and args.time_budget > 0:   # the rate after warm-up (the first steps compile, allocate)
            rate = 50 / (time.time() - t50)
            if args.short_frac > 0:      # short steps at `rate`, full ones args.full_cost times slower
                per_step = args.short_frac + (1 - args.short_frac) * args.full_cost
                steps = min(steps, int((args.time_budget - (time.time() - t0)) * rate / per_step) + step)
                args.short_steps = int(args.short_frac * steps)
            else:
                steps = min(steps, int((args.time_budget - (time.time() - t0)) * rate) + step)
            say(f"{rate:.2f} steps/s -> {steps} steps ({args.short_steps} short)")
        if step % args.log_every == 0 or step == steps:
            m = torch.stack(running).mean(0).tolist()
            say(f"step {step}/{steps} loss img {m[0]:.4f} aux {m[1]:.3f} attn {m[2]:.3f}"
                + (f" video {m[3]:.4f} aux {m[4]:.3f} attn {m[5]:.3f}" if len(m) > 3 else "")
                + f" lr {opt.param_groups[0]['lr']:.2e} t={time.time() - t0:.0f}s")
            running = []
        if step % args.val_every == 0 and step < steps:
            model.eval()
            acc = {**accuracy(model, 200, S.SPLIT_SEEDS["val"], 1),
                   **accuracy(model, 60, S.SPLIT_SEEDS["val"], S.FRAMES)}
            say(f"  val {acc}")
            model.train()

    model.eval()
    train_seconds = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)                  # saved before the test, so a cut-off run keeps the model
    build.build_processor(version=2).save_pretrained(args.out)
    test = {**accuracy(model, args.eval_n, S.SPLIT_SEEDS["test"], 1),
            **accuracy(model, args.eval_videos, S.SPLIT_SEEDS["test"], S.FRAMES, chunk=25)}
    say(f"test (every token, {args.eval_n} images + {args.eval_videos} videos): {test}")
    report = {"recipe": {k: v for k, v in vars(args).items() if k != "out"}, "steps": step,
              "train_seconds": round(train_seconds, 1),
              "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
              "torch": torch.__version__, "test_split_seed": S.SPLIT_SEEDS["test"], "test_images": args.eval_n,
              "test_videos": args.eval_videos, "test_accuracy_full_tokens": test, "log": log}
    with open(os.path.join(args.out, "train_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("saved", {f: os.path.getsize(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out))}, flush=True)
    return report


if __name__ == "__main__":
    main()
