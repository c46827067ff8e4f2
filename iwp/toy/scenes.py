"""Procedural scenes and questions for the toy model, vectorised in torch and deterministic from a seed.

A scene is a 176x176 image (11x11 patches of 16 px): a background split into a flat half and a periodically
textured half, and 5-10 small objects, each a unique (colour, shape) pair carrying a unique black or white
digit, each centred in its own patch. Questions need the detail of one or two objects (the
digit, the colour or shape of the object with a given digit, left/above relations) or of every object of
a colour (counts), so they cannot be answered from a few tokens picked at random.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

IMAGE, PATCH = 176, 16
GRID = IMAGE // PATCH                     # 11x11 = 121 visual tokens
MIN_OBJECTS, MAX_OBJECTS = 5, 10
SPLIT_SEEDS = {"val": 1_000_002, "test": 1_000_003}   # training draws from its own stream (seed 0, on its device)

COLORS = {"red": (215, 35, 35), "green": (30, 165, 55), "blue": (35, 75, 225),
          "yellow": (235, 210, 30), "purple": (145, 50, 190), "orange": (245, 135, 25)}
COLOR_NAMES = list(COLORS)
SHAPES = ["circle", "square", "triangle", "diamond"]
DIGITS = [str(d) for d in range(10)]
DARK_INK = {"green", "yellow", "orange"}   # digits are drawn black on these, white on the others

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<sep>"]
# Question templates; {C}/{S} name the target object, {C2}/{S2} the second one, {D} a digit.
TEMPLATES = {
    "digit": ["what number is on the {C} {S}", "which number is on the {C} {S}", "what digit is on the {C} {S}"],
    "color": ["what color is the shape with the number {D}", "what colour is the shape with the number {D}"],
    "shape": ["what shape has the number {D}", "which shape has the number {D}"],
    "count": ["how many {C} shapes are there", "how many {C} objects are there"],
    "left": ["is the {C} {S} left of the {C2} {S2}"],
    "above": ["is the {C} {S} above the {C2} {S2}"],
}
KINDS = list(TEMPLATES)
KIND_WEIGHTS = [0.30, 0.17, 0.13, 0.15, 0.125, 0.125]
# The benchmark's task set, fixed before any method comparison: the shipped model answers these with
# (nearly) all tokens. It was trained on left/above too but stays at chance on them (toy-train.json), so
# no selector could be judged on them; they are left out of evaluation, not out of training.
BENCHMARK_KINDS = ("digit", "color", "shape", "count")
_TEMPLATE_WORDS = sorted({w for ts in TEMPLATES.values() for t in ts for w in t.split() if not w.startswith("{")})
WORDS = SPECIALS + _TEMPLATE_WORDS + COLOR_NAMES + SHAPES + DIGITS + ["yes", "no"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
PAD, UNK, BOS, EOS, IMAGE_TOKEN, SEP = (VOCAB[w] for w in SPECIALS)

_FONT = [  # 5x7 bitmaps of the digits 0-9
    "01110 10001 10011 10101 11001 10001 01110", "00100 01100 00100 00100 00100 00100 01110",
    "01110 10001 00001 00010 00100 01000 11111", "11111 00010 00100 00010 00001 10001 01110",
    "00010 00110 01010 10010 11111 00010 00010", "11111 10000 11110 00001 00001 10001 01110",
    "00110 01000 10000 11110 10001 10001 01110", "11111 00001 00010 00100 01000 01000 01000",
    "01110 10001 10001 01110 10001 10001 01110", "01110 10001 10001 01111 00001 00010 01100"]
FONT = torch.tensor([[[int(c) for c in row] for row in g.split()] for g in _FONT], dtype=torch.bool)  # [10,7,5]
GLYPH_SCALE = 1                           # digits are 5x7 px
_HALF_WINDOW = 10                         # objects fit in 20x20 px


@dataclass
class Scenes:
    """A batch of scenes: object slots [B, MAX_OBJECTS] (absent slots have present=False)."""
    present: Tensor   # bool
    color: Tensor     # index into COLOR_NAMES
    shape: Tensor     # index into SHAPES
    digit: Tensor     # 0-9
    row: Tensor       # grid cell
    col: Tensor
    cx: Tensor        # centre in pixels (float)
    cy: Tensor
    radius: Tensor
    background: dict[str, Tensor]

    def to(self, device) -> "Scenes":
        moved = {k: v.to(device) for k, v in vars(self).items() if k != "background"}
        return Scenes(**moved, background={k: v.to(device) for k, v in self.background.items()})


@dataclass
class Questions:
    """Questions as right-padded word ids [B, L] with their lengths, answers as word ids, kinds as indices."""
    ids: Tensor
    lengths: Tensor
    answer: Tensor
    kind: Tensor

    def text(self, i: int) -> str:
        return " ".join(WORDS[t] for t in self.ids[i, :self.lengths[i]].tolist())

    def answer_text(self, i: int) -> str:
        return WORDS[int(self.answer[i])]


def _rand(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=gen, device=gen.device)


def _choice(gen: torch.Generator, n: int, k: int, batch: int) -> Tensor:
    """k distinct values out of range(n) per row: [batch, k]."""
    return _rand(gen, batch, n).argsort(dim=1)[:, :k]


def sample_scenes(batch: int, gen: torch.Generator) -> Scenes:
    """Draw `batch` scenes; every random number comes from `gen` (and lives on its device)."""
    n = MIN_OBJECTS + (_rand(gen, batch) * (MAX_OBJECTS - MIN_OBJECTS + 1)).long()
    present = torch.arange(MAX_OBJECTS, device=gen.device)[None] < n[:, None]
    combo = _choice(gen, len(COLORS) * len(SHAPES), MAX_OBJECTS, batch)      # unique (colour, shape)
    digit = _choice(gen, 10, MAX_OBJECTS, batch)                             # unique digits
    cell = _choice(gen, GRID * GRID, MAX_OBJECTS, batch)                     # one object per patch
    row, col = cell // GRID, cell % GRID
    cx = col.float() * PATCH + PATCH / 2 - 0.5                               # pixel-centre coordinates
    cy = row.float() * PATCH + PATCH / 2 - 0.5
    radius = 6.8 + _rand(gen, batch, MAX_OBJECTS) * 0.4
    background = {
        "split_vertical": _rand(gen, batch) < 0.5,
        "split_at": 40 + _rand(gen, batch) * 96,
        "flat_first": _rand(gen, batch) < 0.5,
        "flat": 0.45 + 0.4 * _rand(gen, batch, 1) + 0.08 * (_rand(gen, batch, 3) - 0.5),   # muted grey-ish
        "texture": 0.45 + 0.4 * _rand(gen, batch, 1) + 0.08 * (_rand(gen, batch, 3) - 0.5),
        "pattern": (_rand(gen, batch) * 3).long(),                                  # stripes / bars / checks
        "noise_seed": (_rand(gen, batch) * 2**31).long(),
    }
    return Scenes(present, combo // len(SHAPES), combo % len(SHAPES), digit, row, col, cx, cy, radius, background)


def render(s: Scenes, noise: float = 0.015) -> Tensor:
    """Images [B, 3, IMAGE, IMAGE] in [0, 1], quantised to 8 bits like a PNG."""
    dev = s.cx.device
    B = s.cx.shape[0]
    g = torch.arange(IMAGE, device=dev).float()
    yy, xx = torch.meshgrid(g, g, indexing="ij")                                  # [H, W]
    bg = s.background
    coord = torch.where(bg["split_vertical"][:, None, None], xx[None], yy[None])  # [B, H, W]
    flat_side = (coord < bg["split_at"][:, None, None]) == bg["flat_first"][:, None, None]
    xi, yi = xx.long()[None], yy.long()[None]
    pattern = bg["pattern"][:, None, None]
    # periods of 8 px divide the 16 px patch, so textured patches are near-copies of each other
    on = torch.where(pattern == 0, (xi + yi) % 8 < 4, torch.where(pattern == 1, yi % 8 < 4, (xi // 8 + yi // 8) % 2 == 0))
    tex = bg["texture"][:, :, None, None] * torch.where(on, 1.0, 0.8)[:, None]
    img = torch.where(flat_side[:, None], bg["flat"][:, :, None, None].expand(B, 3, IMAGE, IMAGE), tex)

    palette = torch.tensor(list(COLORS.values()), dtype=torch.float32, device=dev) / 255.0
    ink = torch.tensor([0.0 if c in DARK_INK else 1.0 for c in COLOR_NAMES], device=dev)
    font = FONT.to(dev)
    gw, gh = 5 * GLYPH_SCALE, 7 * GLYPH_SCALE
    flat = img.reshape(B, 3, IMAGE * IMAGE)
    w = torch.arange(2 * _HALF_WINDOW, device=dev).float()
    for k in range(MAX_OBJECTS):  # each object drawn inside its own window, in slot order
        x = (s.cx[:, k].floor() - _HALF_WINDOW)[:, None, None] + w[None, None, :]     # [B, 1, W]
        y = (s.cy[:, k].floor() - _HALF_WINDOW)[:, None, None] + w[None, :, None]     # [B, W, 1]
        x, y = x.expand(B, w.numel(), w.numel()), y.expand(B, w.numel(), w.numel())
        dx, dy = x - s.cx[:, k, None, None], y - s.cy[:, k, None, None]
        r = s.radius[:, k, None, None]
        shp = s.shape[:, k, None, None]
        circle = dx ** 2 + dy ** 2 <= r ** 2
        square = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
        triangle = (dy <= r * 0.9) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55)
        diamond = dx.abs() + dy.abs() <= r * 1.1
        mask = torch.where(shp == 0, circle, torch.where(shp == 1, square, torch.where(shp == 2, triangle, diamond)))
        on_image = (x >= 0) & (x < IMAGE) & (y >= 0) & (y < IMAGE) & s.present[:, k, None, None]
        # the digit, centred (a little lower in triangles, where the shape is wider)
        gx0 = (s.cx[:, k] - gw / 2).round()[:, None, None]
        gy0 = (s.cy[:, k] - gh / 2 + torch.where(s.shape[:, k] == 2, 1.0, 0.0)).round()[:, None, None]
        u = ((x - gx0) // GLYPH_SCALE).long()
        v = ((y - gy0) // GLYPH_SCALE).long()
        inside = (u >= 0) & (u < 5) & (v >= 0) & (v < 7)
        lit = font[s.digit[:, k][:, None, None].expand_as(u), v.clamp(0, 6), u.clamp(0, 4)] & inside
        colour = torch.where(lit[:, None], ink[s.color[:, k]][:, None, None, None], palette[s.color[:, k]][:, :, None, None])
        idx = (y.clamp(0, IMAGE - 1) * IMAGE + x.clamp(0, IMAGE - 1)).long().flatten(1)[:, None].expand(B, 3, -1)
        old = flat.gather(2, idx)
        paint = (mask & on_image).flatten(1)[:, None]
        flat = flat.scatter(2, idx, torch.where(paint, colour.flatten(2), old))
    img = flat.reshape(B, 3, IMAGE, IMAGE)
    if noise > 0:
        gen = torch.Generator(device=dev).manual_seed(int(bg["noise_seed"].sum()) % 2**31)
        img = img + noise * torch.randn(img.shape, generator=gen, device=dev)
    return (img.clamp(0, 1) * 255).round() / 255


def _template_table(device) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """All templates as word ids with slot codes (-1 C, -2 S, -3 D, -4 C2, -5 S2), right-padded."""
    slots = {"{C}": -1, "{S}": -2, "{D}": -3, "{C2}": -4, "{S2}": -5}
    rows, kinds = [], []
    for ki, kind in enumerate(KINDS):
        for t in TEMPLATES[kind]:
            rows.append([slots.get(w, VOCAB.get(w)) for w in t.split()])
            kinds.append(ki)
    width = max(map(len, rows))
    table = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        table[i, :len(r)] = torch.tensor(r)
    lengths = torch.tensor([len(r) for r in rows])
    per_kind = [sum(1 for k in kinds if k == ki) for ki in range(len(KINDS))]
    return table.to(device), lengths.to(device), torch.tensor(kinds, device=device), per_kind


def _pick(gen: torch.Generator, valid: Tensor) -> Tensor:
    """One random True index per row of `valid` [B, M] (argmax of masked noise; 0 when none)."""
    return torch.where(valid, _rand(gen, *valid.shape), -1.0).argmax(dim=1)


def _pair(gen: torch.Generator, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A random (i, j) with valid[b, i, j] per row; also whether one existed."""
    B, M, _ = valid.shape
    flat = torch.where(valid.flatten(1), _rand(gen, B, M * M), -1.0)
    best = flat.argmax(dim=1)
    return best // M, best % M, valid.flatten(1).any(dim=1)


def sample_questions(s: Scenes, gen: torch.Generator, kinds: tuple[str, ...] | None = None) -> Questions:
    """One question per scene, its kind drawn with KIND_WEIGHTS (restricted to `kinds`), its template uniformly."""
    dev = s.cx.device
    B, M = s.present.shape
    table, tlen, tkind, per_kind = _template_table(dev)
    w = torch.tensor([wk if kinds is None or k in kinds else 0.0 for k, wk in zip(KINDS, KIND_WEIGHTS)], device=dev)
    kind = torch.searchsorted(w.cumsum(0) / w.sum(), _rand(gen, B)).clamp(max=len(KINDS) - 1)
    ar = torch.arange(B, device=dev)

    target = _pick(gen, s.present)                         # for digit / color / shape
    pair_ok = s.present[:, :, None] & s.present[:, None, :] & ~torch.eye(M, dtype=torch.bool, device=dev)
    li, lj, l_ok = _pair(gen, pair_ok & (s.col[:, :, None] != s.col[:, None, :]))
    ai, aj, a_ok = _pair(gen, pair_ok & (s.row[:, :, None] != s.row[:, None, :]))
    # counts: usually a colour that is present, sometimes any colour (so zero occurs)
    count_color = torch.where(_rand(gen, B) < 0.75, s.color[ar, target], (_rand(gen, B) * len(COLORS)).long())
    count = ((s.color == count_color[:, None]) & s.present).sum(1)

    left, above = KINDS.index("left"), KINDS.index("above")
    kind = torch.where(((kind == left) & ~l_ok) | ((kind == above) & ~a_ok), KINDS.index("digit"), kind)
    i = torch.where(kind == left, li, torch.where(kind == above, ai, target))
    j = torch.where(kind == left, lj, aj)

    c_word = VOCAB[COLOR_NAMES[0]] + torch.where(kind == KINDS.index("count"), count_color, s.color[ar, i])
    s_word = VOCAB[SHAPES[0]] + s.shape[ar, i]
    d_word = VOCAB["0"] + s.digit[ar, i]
    c2_word = VOCAB[COLOR_NAMES[0]] + s.color[ar, j]
    s2_word = VOCAB[SHAPES[0]] + s.shape[ar, j]
    yes = torch.where(kind == left, s.cx[ar, i] < s.cx[ar, j], s.cy[ar, i] < s.cy[ar, j])
    answers = torch.stack([d_word, c_word, s_word, VOCAB["0"] + count,
                           torch.where(yes, VOCAB["yes"], VOCAB["no"]), torch.where(yes, VOCAB["yes"], VOCAB["no"])], 1)
    answer = answers[ar, kind]

    first = torch.tensor([0] + per_kind, device=dev).cumsum(0)[:-1]
    counts = torch.tensor(per_kind, device=dev)
    template = first[kind] + (_rand(gen, B) * counts[kind]).long().clamp(max=counts[kind] - 1)
    ids = table[template]
    for code, word in ((-1, c_word), (-2, s_word), (-3, d_word), (-4, c2_word), (-5, s2_word)):
        ids = torch.where(ids == code, word[:, None], ids)
    return Questions(ids, tlen[template], answer, kind)


def generate(n: int, seed: int, device: str | torch.device = "cpu",
             kinds: tuple[str, ...] | None = None) -> tuple[Tensor, Scenes, Questions]:
    """n scenes with one question each (of the given kinds; default all), determined by (seed, device type)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    s = sample_scenes(n, gen)
    return render(s), s, sample_questions(s, gen, kinds)


def sequences(qs: Questions | list[Questions], n_image: int = GRID * GRID) -> tuple[Tensor, Tensor, Tensor]:
    """Rows `<s> <image>*N q1 <sep> a1 </s> q2 <sep> a2 </s> ...`, right-padded: (ids, attention, labels).

    Labels mark each answer and its </s>. The part up to the first <sep> is exactly what the processor's
    chat template produces for q1; later turns only add training signal (attention is causal).
    """
    qs = [qs] if isinstance(qs, Questions) else qs
    B, dev = qs[0].ids.shape[0], qs[0].ids.device
    ar = torch.arange(B, device=dev)
    parts, labelled = [], []
    for q in qs:
        L = q.ids.shape[1]
        seg = torch.full((B, L + 3), PAD, dtype=torch.long, device=dev)
        seg[:, :L] = q.ids
        seg[ar, q.lengths], seg[ar, q.lengths + 1], seg[ar, q.lengths + 2] = SEP, q.answer, EOS
        lab = torch.zeros_like(seg, dtype=torch.bool)
        lab[ar, q.lengths + 1] = lab[ar, q.lengths + 2] = True
        parts.append(seg)
        labelled.append(lab)
    tail, lab = torch.cat(parts, 1), torch.cat(labelled, 1)
    order = (tail == PAD).int().argsort(dim=1, stable=True)       # squeeze out the pads between turns
    tail, lab = tail.gather(1, order), lab.gather(1, order)
    head = torch.tensor([BOS] + [IMAGE_TOKEN] * n_image, device=dev).expand(B, -1)
    ids = torch.cat([head, tail], 1)
    labels = torch.cat([torch.full_like(head, -100), torch.where(lab, tail, -100)], 1)
    return ids, (ids != PAD).long(), labels


def to_pil(images: Tensor) -> list[Image.Image]:
    """[B,3,H,W] floats in [0,1] -> PIL RGB images."""
    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def example(seed: int) -> tuple[Image.Image, str, str]:
    """One scene, question and answer for demos and tests."""
    images, _, q = generate(1, seed)
    return to_pil(images)[0], q.text(0), q.answer_text(0)


def video(seed: int, frames: int = 8) -> tuple[list[Image.Image], Scenes]:
    """Frames of one scene whose objects drift in straight lines (they keep colour, shape and digit)."""
    gen = torch.Generator().manual_seed(seed)
    s = sample_scenes(1, gen)
    vx = (_rand(gen, 1, MAX_OBJECTS) - 0.5) * 4
    vy = (_rand(gen, 1, MAX_OBJECTS) - 0.5) * 4
    out = []
    for t in range(frames):
        moved = Scenes(**{**vars(s), "cx": (s.cx + vx * t).clamp(8, IMAGE - 9),
                          "cy": (s.cy + vy * t).clamp(8, IMAGE - 9)})
        out.append(to_pil(render(moved))[0])
    return out, s


def token_targets(s: Scenes) -> Tensor:
    """Per visual token [B, GRID*GRID, 3]: colour, shape, digit of the object centred there (or 'none')."""
    B = s.cx.shape[0]
    t = torch.tensor([len(COLORS), len(SHAPES), 10], device=s.cx.device).repeat(B, GRID * GRID, 1)
    token = (s.row * GRID + s.col).masked_fill(~s.present, GRID * GRID)          # absent -> dummy slot
    t = torch.cat([t, t[:, :1]], 1)
    t.scatter_(1, token[..., None].expand(-1, -1, 3), torch.stack([s.color, s.shape, s.digit], -1))
    return t[:, :GRID * GRID]


def save_examples(out_dir: str, images: int = 3, videos: int = 1, frames: int = 16, fps: int = 4) -> list[dict]:
    """Write example scenes (PNG) and videos (H.264 .mp4 via PyAV when present, VP8 .webm via OpenCV) with
    a question and answer each, plus examples.json listing them."""
    import json
    import os

    import numpy as np

    os.makedirs(out_dir, exist_ok=True)
    listed = []
    wanted = ["digit", "color", "count", "shape", "left", "above"]
    seed = 9000
    for i in range(images):
        while True:  # the first seeds whose questions are of the wanted kinds, so examples are varied
            _, _, q = generate(1, seed)
            seed += 1
            if KINDS[int(q.kind[0])] == wanted[i % len(wanted)]:
                break
        image, question, answer = example(seed - 1)
        name = f"scene-{i + 1}.png"
        image.save(os.path.join(out_dir, name))
        listed.append({"file": name, "kind": "image", "question": question, "answer": answer, "seed": seed - 1})
    for i in range(videos):
        seed = 9100 + i
        clip, s = video(seed, frames)
        k = int(s.present.nonzero()[0, 1])                  # a question every frame answers the same way
        question = f"what number is on the {COLOR_NAMES[int(s.color[0, k])]} {SHAPES[int(s.shape[0, k])]}"
        arrays = [np.asarray(f) for f in clip]
        files = []
        try:
            import av
            name = f"moving-{i + 1}.mp4"
            with av.open(os.path.join(out_dir, name), "w") as container:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = IMAGE, IMAGE, "yuv420p"
                for a in arrays:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
                container.mux(stream.encode())
            files.append(name)
        except ImportError:
            pass
        import cv2
        name = f"moving-{i + 1}.webm"
        writer = cv2.VideoWriter(os.path.join(out_dir, name), cv2.VideoWriter_fourcc(*"VP80"), fps, (IMAGE, IMAGE))
        for a in arrays:
            writer.write(cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
        writer.release()
        files.append(name)
        for name in files:
            listed.append({"file": name, "kind": "video", "question": question,
                           "answer": str(int(s.digit[0, k])), "seed": seed, "frames": frames, "fps": fps})
    with open(os.path.join(out_dir, "examples.json"), "w") as f:
        json.dump(listed, f, indent=1)
    return listed


if __name__ == "__main__":
    import sys
    print(save_examples(sys.argv[1] if len(sys.argv) > 1 else "assets/examples"))
