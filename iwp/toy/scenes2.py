"""Scenes v2: LLaVA-1.5-shaped inputs (336 px, 14 px patches: 24x24 = 576 visual tokens), images and 8-frame videos.

A scene has a background split into a large flat region and a large periodically textured one (period 7 px,
so textured patches are near-copies of each other), 4-8 "named" objects (a unique colour-shape pair each,
carrying a unique black or white 5x7 digit) and one shape repeated 2-5 times without a digit (duplicated
tokens). Every object sits inside one patch, so the answer lives in the tokens that cover it.

Image questions: the digit on one object, the colour or shape of the object with a given digit, how many
objects of a colour (named and repeated ones: several objects). Video questions (8 frames, objects static):
the digit on a static object, the colour of the object that appears part-way through, and the digit a
changing object shows at the end (its digit changes once: the answer needs the frame order).
Everything is drawn from a torch.Generator, so a split is a function of its seed (and device type).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .scenes import FONT, SPECIALS, Questions, _choice, _rand, to_pil  # noqa: F401  (re-exported)
from .scenes import sequences as _sequences

IMAGE, PATCH = 336, 14
GRID = IMAGE // PATCH                      # 24x24 = 576 visual tokens per image / frame
N_TOKENS = GRID * GRID
FRAMES = 8
MIN_NAMED, MAX_NAMED = 4, 8
MIN_REPEAT, MAX_REPEAT = 2, 5
NEWCOMER = MAX_NAMED                       # slot of the object that appears in a video
SLOTS = MAX_NAMED + 1 + MAX_REPEAT         # named objects, the newcomer, the repeated shape
SPLIT_SEEDS = {"val": 2_000_002, "test": 2_000_003}   # training draws from its own stream (seed 0, on its device)

COLORS = {"red": (215, 35, 35), "green": (30, 165, 55), "blue": (35, 75, 225),
          "yellow": (235, 210, 30), "purple": (145, 50, 190), "orange": (245, 135, 25)}
COLOR_NAMES = list(COLORS)
SHAPES = ["circle", "square", "triangle", "diamond"]
DIGITS = [str(d) for d in range(10)]
DARK_INK = {"green", "yellow", "orange"}

TEMPLATES = {
    "digit": ["what number is on the {C} {S}", "which number is on the {C} {S}", "what digit is on the {C} {S}"],
    "color": ["what color is the shape with the number {D}", "what colour is the shape with the number {D}"],
    "shape": ["what shape has the number {D}", "which shape has the number {D}"],
    "count": ["how many {C} shapes are there", "how many {C} objects are there"],
    "video_digit": ["what number is on the {C} {S}", "which number is on the {C} {S}"],
    "video_appear": ["what color is the shape that appears", "what colour is the new shape"],
    "video_change": ["what number is on the {C} {S} at the end", "which number does the {C} {S} show at the end"],
}
KINDS = list(TEMPLATES)
IMAGE_KINDS = ("digit", "color", "shape", "count")
VIDEO_KINDS = ("video_digit", "video_appear", "video_change")
KIND_WEIGHTS = {"digit": 0.3, "color": 0.2, "shape": 0.2, "count": 0.3,
                "video_digit": 0.3, "video_appear": 0.3, "video_change": 0.4}
_TEMPLATE_WORDS = sorted({w for ts in TEMPLATES.values() for t in ts for w in t.split() if not w.startswith("{")})
WORDS = SPECIALS + _TEMPLATE_WORDS + COLOR_NAMES + SHAPES + DIGITS + ["yes", "no"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
PAD, UNK, BOS, EOS, IMAGE_TOKEN, SEP = (VOCAB[w] for w in SPECIALS)   # the same ids as v1 (sequences() relies on it)
RADIUS = 6.2


@dataclass
class Scenes:
    """A batch of scenes, object slots [B, SLOTS]; for videos also when the newcomer appears and which
    named object changes its digit when (to new_digit). digit is -1 on the repeated, digit-less shapes."""
    present: Tensor
    color: Tensor
    shape: Tensor
    digit: Tensor
    row: Tensor
    col: Tensor
    background: dict[str, Tensor]
    frames: int = 1
    appear_t: Tensor | None = None
    change_slot: Tensor | None = None
    change_t: Tensor | None = None
    new_digit: Tensor | None = None

    @property
    def cell(self) -> Tensor:
        return self.row * GRID + self.col

    def per_frame(self) -> tuple[Tensor, Tensor]:
        """(present, digit) per frame: [B, F, SLOTS]."""
        B, F = self.present.shape[0], self.frames
        present = self.present[:, None].expand(B, F, SLOTS).clone()
        digit = self.digit[:, None].expand(B, F, SLOTS).clone()
        if F > 1:
            t = torch.arange(F, device=self.present.device)[None, :]
            present[:, :, NEWCOMER] &= t >= self.appear_t[:, None]
            changed = t >= self.change_t[:, None]                                       # [B, F]
            slot = torch.nn.functional.one_hot(self.change_slot, SLOTS).bool()[:, None]  # [B, 1, S]
            digit = torch.where(slot & changed[..., None], self.new_digit[:, None, None], digit)
        return present, digit


def sample_scenes(batch: int, gen: torch.Generator, frames: int = 1) -> Scenes:
    """`batch` scenes (videos of `frames` frames when frames > 1); all randomness from `gen`."""
    dev = gen.device
    slots = torch.arange(SLOTS, device=dev)[None]
    n_named = MIN_NAMED + (_rand(gen, batch) * (MAX_NAMED - MIN_NAMED + 1)).long()
    n_repeat = MIN_REPEAT + (_rand(gen, batch) * (MAX_REPEAT - MIN_REPEAT + 1)).long()
    present = (slots < n_named[:, None]) | ((slots > NEWCOMER) & (slots <= NEWCOMER + n_repeat[:, None]))
    present |= (slots == NEWCOMER) & (frames > 1)
    combo = _choice(gen, len(COLORS) * len(SHAPES), MAX_NAMED + 2, batch)   # named + newcomer + repeated pair
    combo = torch.cat([combo[:, :MAX_NAMED + 1], combo[:, -1:].expand(batch, MAX_REPEAT)], 1)
    digits = _choice(gen, 10, MAX_NAMED + 2, batch)                         # named + newcomer + changed-to
    digit = torch.cat([digits[:, :MAX_NAMED + 1], torch.full((batch, MAX_REPEAT), -1, device=dev)], 1)
    cell = _choice(gen, N_TOKENS, SLOTS, batch)                             # one object per patch
    background = {
        "split_vertical": _rand(gen, batch) < 0.5,
        "split_at": 90 + _rand(gen, batch) * 156,
        "flat_first": _rand(gen, batch) < 0.5,
        "flat": 0.45 + 0.4 * _rand(gen, batch, 1) + 0.08 * (_rand(gen, batch, 3) - 0.5),
        "texture": 0.45 + 0.4 * _rand(gen, batch, 1) + 0.08 * (_rand(gen, batch, 3) - 0.5),
        "pattern": (_rand(gen, batch) * 3).long(),
        "noise_seed": (_rand(gen, batch) * 2**31).long(),
    }
    s = Scenes(present, combo // len(SHAPES), combo % len(SHAPES), digit, cell // GRID, cell % GRID, background,
               frames)
    if frames > 1:
        s.appear_t = 1 + (_rand(gen, batch) * (frames - 2)).long()           # 1 .. F-2: absent, then present
        named = slots[:, :MAX_NAMED] < n_named[:, None]
        s.change_slot = torch.where(named, _rand(gen, batch, MAX_NAMED), -1.0).argmax(1)
        s.change_t = 1 + (_rand(gen, batch) * (frames - 1)).long()           # 1 .. F-1
        s.new_digit = digits[:, -1]
    return s


def render(s: Scenes, noise: float = 0.015) -> Tensor:
    """Images [B*F, 3, IMAGE, IMAGE] in [0, 1] (frames of a video consecutive), quantised to 8 bits."""
    dev = s.present.device
    present, digit = (x.flatten(0, 1) for x in s.per_frame())                 # [B*F, S]
    F = s.frames
    rep = lambda x: x.repeat_interleave(F, 0)                                 # noqa: E731
    color, shape, row, col = rep(s.color), rep(s.shape), rep(s.row), rep(s.col)
    bg = {k: rep(v) for k, v in s.background.items()}
    B = present.shape[0]
    g = torch.arange(IMAGE, device=dev).float()
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    coord = torch.where(bg["split_vertical"][:, None, None], xx[None], yy[None])
    flat_side = (coord < bg["split_at"][:, None, None]) == bg["flat_first"][:, None, None]
    xi, yi = xx.long()[None], yy.long()[None]
    pattern = bg["pattern"][:, None, None]
    on = torch.where(pattern == 0, (xi + yi) % 7 < 3,
                     torch.where(pattern == 1, yi % 7 < 3, (xi // 7 + yi // 7) % 2 == 0))
    tex = bg["texture"][:, :, None, None] * torch.where(on, 1.0, 0.8)[:, None]
    img = torch.where(flat_side[:, None], bg["flat"][:, :, None, None].expand(B, 3, IMAGE, IMAGE), tex)

    palette = torch.tensor(list(COLORS.values()), dtype=torch.float32, device=dev) / 255.0
    ink = torch.tensor([0.0 if c in DARK_INK else 1.0 for c in COLOR_NAMES], device=dev)
    font = FONT.to(dev)
    flat = img.reshape(B, 3, IMAGE * IMAGE)
    w = torch.arange(PATCH, device=dev)
    for k in range(SLOTS):  # each object painted inside its own patch
        x0, y0 = col[:, k] * PATCH, row[:, k] * PATCH
        x = (x0[:, None, None] + w[None, None, :]).expand(B, PATCH, PATCH)
        y = (y0[:, None, None] + w[None, :, None]).expand(B, PATCH, PATCH)
        dx = x.float() - (x0.float() + 6.5)[:, None, None]
        dy = y.float() - (y0.float() + 6.5)[:, None, None]
        r, shp = RADIUS, shape[:, k, None, None]
        circle = dx ** 2 + dy ** 2 <= r ** 2
        square = (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
        triangle = (dy <= r * 0.95) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.7)
        diamond = dx.abs() + dy.abs() <= r * 1.1
        mask = torch.where(shp == 0, circle, torch.where(shp == 1, square, torch.where(shp == 2, triangle, diamond)))
        u = (x - x0[:, None, None] - 4).long()                                # glyph columns 4..8
        # glyph rows 3..9 (4..10 in triangles, where the shape is wider lower down)
        v = (y - y0[:, None, None] - 3 - (shape[:, k] == 2).long()[:, None, None]).long()
        d = digit[:, k]
        inside = (u >= 0) & (u < 5) & (v >= 0) & (v < 7) & (d >= 0)[:, None, None]
        lit = font[d.clamp(min=0)[:, None, None].expand_as(u), v.clamp(0, 6), u.clamp(0, 4)] & inside
        colour = torch.where(lit[:, None], ink[color[:, k]][:, None, None, None],
                             palette[color[:, k]][:, :, None, None])
        idx = (y * IMAGE + x).flatten(1)[:, None].expand(B, 3, -1)
        old = flat.gather(2, idx)
        paint = (mask & present[:, k, None, None]).flatten(1)[:, None]
        flat = flat.scatter(2, idx, torch.where(paint, colour.flatten(2), old))
    img = flat.reshape(B, 3, IMAGE, IMAGE)
    if noise > 0:
        gen = torch.Generator(device=dev).manual_seed(int(s.background["noise_seed"].sum()) % 2**31)
        img = img + noise * torch.randn(img.shape, generator=gen, device=dev)
    return (img.clamp(0, 1) * 255).round() / 255


@dataclass
class Asked(Questions):
    """Questions plus, per question, the object slots it asks about (for the oracles) and its target slot."""
    relevant: Tensor | None = None   # [B, SLOTS] bool
    target: Tensor | None = None     # [B]

    def text(self, i: int) -> str:
        return " ".join(WORDS[t] for t in self.ids[i, :self.lengths[i]].tolist())

    def answer_text(self, i: int) -> str:
        return WORDS[int(self.answer[i])]


def _template_table(device, kinds: list[str]):
    slots = {"{C}": -1, "{S}": -2, "{D}": -3}
    rows, kind_of = [], []
    for kind in kinds:
        for t in TEMPLATES[kind]:
            rows.append([slots.get(w, VOCAB.get(w)) for w in t.split()])
            kind_of.append(KINDS.index(kind))
    width = max(map(len, rows))
    table = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        table[i, :len(r)] = torch.tensor(r)
    return table.to(device), torch.tensor([len(r) for r in rows], device=device), torch.tensor(kind_of, device=device)


def _pick(gen: torch.Generator, valid: Tensor) -> Tensor:
    return torch.where(valid, _rand(gen, *valid.shape), -1.0).argmax(dim=1)


def sample_questions(s: Scenes, gen: torch.Generator, kinds: tuple[str, ...] | None = None,
                     avoid: Tensor | None = None) -> Asked:
    """One question per scene (image kinds for images, video kinds for videos, restricted to `kinds`); its
    kind drawn with KIND_WEIGHTS, its template uniformly. `avoid` [B]: a slot the object questions skip
    (follow-up questions about another object)."""
    dev = s.present.device
    B = s.present.shape[0]
    allowed = [k for k in (VIDEO_KINDS if s.frames > 1 else IMAGE_KINDS) if kinds is None or k in kinds]
    table, tlen, _ = _template_table(dev, allowed)
    w = torch.tensor([KIND_WEIGHTS[k] for k in allowed], device=dev)
    ki = torch.searchsorted(w.cumsum(0) / w.sum(), _rand(gen, B)).clamp(max=len(allowed) - 1)   # into allowed
    kind = torch.tensor([KINDS.index(k) for k in allowed], device=dev)[ki]
    ar = torch.arange(B, device=dev)
    slots = torch.arange(SLOTS, device=dev)[None]
    named = s.present & (slots < MAX_NAMED)
    if avoid is not None:
        named &= slots != avoid[:, None]
    static = named
    if s.frames > 1:
        static = named & (slots != s.change_slot[:, None])
    target = _pick(gen, static)
    count_color = torch.where(_rand(gen, B) < 0.75, s.color[ar, _pick(gen, s.present)],
                              (_rand(gen, B) * len(COLORS)).long())
    count_hit = (s.color == count_color[:, None]) & s.present
    count = count_hit.sum(1)

    K = lambda name: KINDS.index(name)                                       # noqa: E731
    if s.frames > 1:
        target = torch.where(kind == K("video_change"), s.change_slot,
                             torch.where(kind == K("video_appear"), NEWCOMER, target))
    c_word = VOCAB[COLOR_NAMES[0]] + torch.where(kind == K("count"), count_color, s.color[ar, target])
    s_word = VOCAB[SHAPES[0]] + s.shape[ar, target]
    d_word = VOCAB["0"] + s.digit[ar, target].clamp(min=0)
    answer = torch.where(kind == K("digit"), d_word, 0)
    answer = torch.where(kind == K("color"), c_word, answer)
    answer = torch.where(kind == K("shape"), s_word, answer)
    answer = torch.where(kind == K("count"), VOCAB["0"] + count, answer)
    answer = torch.where(kind == K("video_digit"), d_word, answer)
    answer = torch.where(kind == K("video_appear"), c_word, answer)
    if s.frames > 1:
        answer = torch.where(kind == K("video_change"), VOCAB["0"] + s.new_digit, answer)
    relevant = torch.where((kind == K("count"))[:, None], count_hit, slots == target[:, None])

    per = torch.tensor([len(TEMPLATES[k]) for k in allowed], device=dev)   # table rows are grouped by kind
    first = per.cumsum(0) - per
    template = first[ki] + (_rand(gen, B) * per[ki]).long().clamp(max=per[ki] - 1)
    ids = table[template]
    for code, word in ((-1, c_word), (-2, s_word), (-3, d_word)):
        ids = torch.where(ids == code, word[:, None], ids)
    return Asked(ids, tlen[template], answer, kind, relevant=relevant, target=target)


def generate(n: int, seed: int, device: str | torch.device = "cpu", kinds: tuple[str, ...] | None = None,
             frames: int = 1) -> tuple[Tensor, Scenes, Asked]:
    """n scenes (videos of `frames` frames when > 1) with one question each, determined by (seed, device type).
    Images come as [n * frames, 3, IMAGE, IMAGE]."""
    gen = torch.Generator(device=device).manual_seed(seed)
    s = sample_scenes(n, gen, frames)
    return render(s), s, sample_questions(s, gen, kinds)


def sequences(qs, frames: int = 1):
    """Training rows `<s> <image>*N*F q1 <sep> a1 </s> ...` (v1's layout; the special ids are the same)."""
    return _sequences(qs, N_TOKENS * frames)


def token_targets(s: Scenes) -> Tensor:
    """Per visual token [B*F, N_TOKENS, 3]: colour, shape and digit (10: none) of the object in that patch."""
    present, digit = (x.flatten(0, 1) for x in s.per_frame())
    rep = lambda x: x.repeat_interleave(s.frames, 0)                         # noqa: E731
    color, shape, cell = rep(s.color), rep(s.shape), rep(s.cell)
    B = present.shape[0]
    t = torch.tensor([len(COLORS), len(SHAPES), 10], device=present.device).repeat(B, N_TOKENS + 1, 1)
    token = cell.masked_fill(~present, N_TOKENS)
    values = torch.stack([color, shape, torch.where(digit < 0, 10, digit)], -1)
    t.scatter_(1, token[..., None].expand(-1, -1, 3), values)
    return t[:, :N_TOKENS]


def object_tokens(s: Scenes, slots_mask: Tensor) -> list[list[Tensor]]:
    """Per scene, per frame: the token indices (within the frame) of the present objects in slots_mask [B, S]."""
    present, _ = s.per_frame()
    out = []
    for b in range(present.shape[0]):
        out.append([s.cell[b][present[b, f] & slots_mask[b]] for f in range(s.frames)])
    return out


def relevant_tokens(s: Scenes, relevant: Tensor) -> Tensor:
    """[B, F*N_TOKENS] bool: the visual tokens (frames in order) showing an object of `relevant` [B, SLOTS]."""
    present, _ = s.per_frame()                                              # [B, F, S]
    B, F = present.shape[:2]
    out = torch.zeros(B, F, N_TOKENS + 1, dtype=torch.bool, device=present.device)
    token = s.cell[:, None].expand(B, F, SLOTS).masked_fill(~(present & relevant[:, None]), N_TOKENS)
    out.scatter_(2, token, True)
    return out[..., :N_TOKENS].flatten(1)
