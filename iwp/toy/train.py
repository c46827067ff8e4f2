"""Train the toy LLaVA on generated scenes: `python -m iwp.toy.train --out DIR` (one GPU, a few minutes).

Data is drawn on the training device from a generator seeded with --seed; the held-out test split
(scenes.SPLIT_SEEDS, drawn on CPU) is never seen. At the end it reports accuracy with all visual tokens and
with a random subset kept (dropped before the language model), then saves model + processor to --out.

The shipped assets/toy-lvlm came from `--lr 1.2e-3 --time-budget 330` on one H100 (sharing it with a second
run), which settled on 1999 steps: reproduce with `--steps 1999 --lr 1.2e-3`; assets/benchmarks/toy-train.json
holds its report. It needs nothing outside iwp/toy: `cp -r iwp/toy /tmp/r/ && cd /tmp/r && python -m toy.train`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from . import build, scenes
from .scenes import GRID, Questions

N_IMAGE = GRID * GRID


def batch(n: int, gen: torch.Generator, turns: int) -> tuple[torch.Tensor, ...]:
    """One training batch: pixels in [-1, 1], `turns` question-answer turns per image, token targets."""
    s = scenes.sample_scenes(n, gen)
    images = scenes.render(s)
    ids, attention, labels = scenes.sequences([scenes.sample_questions(s, gen) for _ in range(turns)])
    targets = torch.cat([scenes.token_targets(s), _grid_targets(n, images.device)], -1)
    return (images - 0.5) / 0.5, ids, attention, labels, targets


AUX_CLASSES = (len(scenes.COLORS) + 1, len(scenes.SHAPES) + 1, 11, GRID, GRID)


def _grid_targets(n: int, device) -> torch.Tensor:
    idx = torch.arange(N_IMAGE, device=device)
    return torch.stack([idx // GRID, idx % GRID], -1).expand(n, -1, -1)


class AuxHeads(torch.nn.Module):
    """Training-only linear probes on the projected visual tokens: the object's colour, shape and digit
    and the token's row and column. They give the vision side a direct signal from the first step (the
    answer loss alone sits on a plateau for thousands of steps) and are not saved with the model."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = torch.nn.Linear(dim, sum(AUX_CLASSES))

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.proj(feats.reshape(targets.shape[0], N_IMAGE, -1).float()).split(AUX_CLASSES, -1)
        return sum(torch.nn.functional.cross_entropy(lg.flatten(0, 1), t.flatten())
                   for lg, t in zip(logits, targets.unbind(-1)))


def _features(model, pixels: torch.Tensor) -> torch.Tensor:
    """Projected visual tokens [B, N, D] (get_image_features' return type differs across 5.x)."""
    out = model.model.get_image_features(pixel_values=pixels)
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    out = torch.cat(list(out), 0) if isinstance(out, (list, tuple)) else out
    return out.reshape(pixels.shape[0], N_IMAGE, -1)


@torch.no_grad()
def accuracy(model, images: torch.Tensor, q: Questions, keep: float | None = None, seed: int = 0,
             chunk: int = 250) -> tuple[float, list[float]]:
    """Exact-match accuracy of the first answer token; keep<1 drops visual tokens at random before the LM.

    Kept tokens keep their original positions, as the pruning hook does.
    """
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    correct = torch.zeros(len(scenes.KINDS))
    total = torch.zeros(len(scenes.KINDS))
    for start in range(0, images.shape[0], chunk):
        sl = slice(start, start + chunk)
        qc = Questions(q.ids[sl], q.lengths[sl], q.answer[sl], q.kind[sl])
        ids, attention, _ = scenes.sequences(qc)
        ids, attention = ids.to(dev), attention.to(dev)
        B = ids.shape[0]
        emb = model.get_input_embeddings()(ids)
        pixels = ((images[sl] - 0.5) / 0.5).to(dev, emb.dtype)
        emb[:, 1:1 + N_IMAGE] = _features(model, pixels).to(emb.dtype)
        pos = torch.arange(ids.shape[1], device=dev).expand(B, -1)
        sep = 1 + N_IMAGE + qc.lengths.to(dev)
        if keep is not None and keep < 1:
            k = max(1, round(keep * N_IMAGE))
            picks = torch.stack([torch.randperm(N_IMAGE, generator=gen)[:k] for _ in range(B)]).sort(1).values
            rest = torch.arange(1 + N_IMAGE, ids.shape[1])
            keep_pos = torch.cat([torch.zeros(B, 1, dtype=torch.long), 1 + picks, rest.expand(B, -1)], 1).to(dev)
            emb = emb.gather(1, keep_pos[..., None].expand(-1, -1, emb.shape[-1]))
            attention, pos = attention.gather(1, keep_pos), keep_pos
            sep = sep - (N_IMAGE - k)
        out = model.model.language_model(inputs_embeds=emb, attention_mask=attention, position_ids=pos)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        pred = model.lm_head(hidden[torch.arange(B, device=dev), sep]).argmax(-1).cpu()
        ok = (pred == qc.answer.cpu()).float()
        kind = qc.kind.cpu()
        correct += torch.zeros_like(correct).index_add_(0, kind, ok)
        total += torch.bincount(kind, minlength=len(scenes.KINDS)).float()
    return float(correct.sum() / total.sum()), (correct / total.clamp(min=1)).tolist()


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="toy-lvlm")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=384)
    p.add_argument("--turns", type=int, default=4, help="question-answer turns per training image")
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="continue from this saved toy model (warm start)")
    p.add_argument("--aux", type=float, default=0.5, help="weight of the training-only token probes")
    p.add_argument("--time-budget", type=float, default=0, help="seconds; if >0, cut --steps to fit (decided at step 100)")
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--log-every", type=int, default=250)
    args = p.parse_args(argv)

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build.build_model()
    if args.init:  # warm start from a saved toy model (same architecture)
        from transformers import LlavaForConditionalGeneration
        model.load_state_dict(LlavaForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32).state_dict())
    model = model.to(dev).train()
    print(f"params {sum(x.numel() for x in model.parameters()) / 1e6:.2f} M on {dev}", flush=True)
    aux = AuxHeads(model.config.text_config.hidden_size).to(dev)
    captured = {}
    model.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.__setitem__("feats", o))
    params = list(model.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05, fused=dev == "cuda")
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    val_images, _, val_q = scenes.generate(500, scenes.SPLIT_SEEDS["val"])

    steps, t0, running, val_acc = args.steps, time.time(), [], 0.0
    step = 0
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, args.lr, args.warmup)
        pixels, ids, attention, labels, targets = batch(args.batch, gen, args.turns)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = model(input_ids=ids, pixel_values=pixels, attention_mask=attention, labels=labels).loss
            aux_loss = aux(captured.pop("feats"), targets)
        opt.zero_grad(set_to_none=True)
        (loss + args.aux * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running.append(torch.stack([loss.detach(), aux_loss.detach()]))
        step += 1
        if step == 100 and args.time_budget > 0:
            rate = 100 / (time.time() - t0)
            steps = min(steps, int(args.time_budget * rate))
            print(f"{rate:.1f} steps/s -> {steps} steps", flush=True)
        if step % args.log_every == 0 or step == steps:
            lm_loss, aux_loss_mean = torch.stack(running).mean(0).tolist()
            print(f"step {step}/{steps} loss {lm_loss:.4f} aux {aux_loss_mean:.4f} "
                  f"lr {opt.param_groups[0]['lr']:.2e} t={time.time() - t0:.0f}s", flush=True)
            running = []
        if step % 1500 == 0 or step == steps:
            model.eval()
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                val_acc, per = accuracy(model, val_images, val_q)
            print(f"  val {val_acc:.4f} " + " ".join(f"{k}={a:.3f}" for k, a in zip(scenes.KINDS, per)), flush=True)
            model.train()

    model.eval()
    train_seconds = time.time() - t0
    test_images, _, test_q = scenes.generate(args.eval_n, scenes.SPLIT_SEEDS["test"])
    report = {"steps": step, "batch": args.batch, "turns": args.turns, "lr": args.lr, "seed": args.seed, "aux": args.aux, "init": args.init,
              "train_seconds": round(train_seconds, 1), "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
              "val_accuracy": val_acc, "test_n": args.eval_n, "accuracy": {}}
    for keep in (1.0, 0.333, 0.222, 0.111, 0.05):
        acc, per = accuracy(model, test_images, test_q, keep=keep)
        report["accuracy"][str(keep)] = {"all": acc, **dict(zip(scenes.KINDS, per))}
        print(f"test keep={keep} random: {acc:.4f} " + " ".join(f"{k}={a:.3f}" for k, a in zip(scenes.KINDS, per)),
              flush=True)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    build.build_processor().save_pretrained(args.out)
    with open(os.path.join(args.out, "train_report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("saved", {f: os.path.getsize(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out))}, flush=True)
    return report


if __name__ == "__main__":
    main()
