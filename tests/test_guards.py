"""Every input guard of the demo, called directly."""
import cv2
import numpy as np
import pytest
from PIL import Image

from iwp.demo import inputs as guards
from iwp.demo.inputs import InputError
from tests.app_helpers import png_header


def test_question_guard():
    assert guards.check_question("  what colour?  ") == "what colour?"
    for bad in ("", "   \n ", None):
        with pytest.raises(InputError, match="type a question"):
            guards.check_question(bad)
    with pytest.raises(InputError, match="10,000 characters"):
        guards.check_question("x" * 10_000)


def test_settings_guard():
    assert guards.check_settings(0.5, "iwp", ["iwp", "fastv"]) == (0.5, "iwp")
    for r in (0, -1, 1.5, "abc", "0.5", None, float("nan"), float("inf"), True, [0.5]):
        with pytest.raises(InputError, match="^keep_ratio "):
            guards.check_settings(r, "iwp", ["iwp"])
    for m in ("nope", None, 3):
        with pytest.raises(InputError, match="^method: unknown method"):
            guards.check_settings(0.5, m, ["iwp"])


def test_advanced_settings_guard_names_the_field():
    assert guards.check_advanced(None, None, None, None, 4) == {}
    assert guards.check_advanced(2, 0.3, 8, 2.0, 4) == {"layer": 2, "lam": 0.3, "first_chunk": 8, "growth": 2.0}
    bad = [("layer", dict(layer=4)), ("layer", dict(layer=-1)), ("layer", dict(layer=1.5)),
           ("layer", dict(layer="2")), ("lam", dict(lam=float("nan"))), ("lam", dict(lam=1.5)),
           ("first_chunk", dict(first_chunk=0)), ("growth", dict(growth=float("inf"))), ("growth", dict(growth=0.5))]
    for field, given in bad:
        args = {"layer": None, "lam": None, "first_chunk": None, "growth": None, **given}
        with pytest.raises(InputError, match=f"^{field} "):
            guards.check_advanced(args["layer"], args["lam"], args["first_chunk"], args["growth"], 4)


def test_missing_input():
    with pytest.raises(InputError, match="upload an image or a video"):
        guards.choose_input(None, None)
    assert guards.choose_input("a.png", None) == "image"
    assert guards.choose_input(None, "a.mp4") == "video"


def test_the_shown_tab_decides_never_a_hidden_input():
    assert guards.choose_input("a.png", "a.mp4", shown="video") == "video"
    assert guards.choose_input("a.png", "a.mp4", shown="image") == "image"
    with pytest.raises(InputError, match="Video tab is shown but holds no video.*Image tab holds an image"):
        guards.choose_input("a.png", None, shown="video")
    with pytest.raises(InputError, match="Image tab is shown but holds no image"):
        guards.choose_input(None, None, shown="image")
    with pytest.raises(InputError, match="Both an image and a video"):       # no tab (API): say, not guess
        guards.choose_input("a.png", "a.mp4")


def test_good_image_loads_as_rgb(tmp_path):
    p = tmp_path / "ok.png"
    Image.new("RGBA", (64, 32), (10, 20, 30, 255)).save(p)
    img, notes = guards.load_image(str(p))
    assert img.mode == "RGB" and img.size == (64, 32) and notes == []


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        guards.load_image(str(p))


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am text\n" * 10)
    with pytest.raises(InputError, match="not a readable image"):
        guards.load_image(str(p))


def test_truncated_image(tmp_path):
    p = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(p, quality=90)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt"):
        guards.load_image(str(p))


def test_unsupported_format(tmp_path):
    p = tmp_path / "x.tiff"
    Image.new("RGB", (8, 8)).save(p)
    with pytest.raises(InputError, match="Unsupported image format"):
        guards.load_image(str(p))
    q = tmp_path / "really_tiff.png"                      # right name, wrong content format
    q.write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="Unsupported image format TIFF"):
        guards.load_image(str(q))


@pytest.mark.parametrize("side", [20000, 9000])          # above PIL's own bomb limit, and between the two limits
def test_image_bomb_refused_from_the_header(tmp_path, side):
    path = png_header(tmp_path / "bomb.png", side, side)
    with pytest.raises(InputError, match="too large|limit"):
        guards.load_image(path)


def test_huge_image_is_downscaled_to_the_pixel_cap(tmp_path):
    p = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (1, 2, 3)).save(p)
    img, notes = guards.load_image(str(p))
    assert img.width * img.height <= guards.MAX_PIXELS and abs(img.width / img.height - 2) < 0.01
    assert "downscaled" in notes[0] and "2000 x 1000" in notes[0]
    small, notes = guards.load_image(Image.new("RGB", (1500, 1500)))    # PIL images too
    assert small.width * small.height <= guards.MAX_PIXELS and notes


def test_video_guards(tmp_path):
    good = tmp_path / "ok.mp4"
    w = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 32))
    for i in range(20):
        w.write(np.full((32, 32, 3), i * 10, np.uint8))
    w.release()
    clip = guards.load_video(str(good), max_frames=4)
    assert len(clip.frames) == 4
    assert guards.load_video(str(good), max_frames=4) is clip                 # decoded once per upload
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        guards.load_video(str(empty), 4)
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"\x1aE\xdf\xa3" + b"\x00" * 500)     # Matroska magic, nothing decodable
    with pytest.raises(InputError, match="no decodable frames|could not open"):
        guards.load_video(str(junk), 4)
    with pytest.raises(InputError, match="Unsupported video format"):
        guards.load_video(str(tmp_path / "ok.flv"), 4) if (tmp_path / "ok.flv").write_bytes(b"x") else None


def test_size_note_reports_the_uploaded_size_of_a_huge_jpeg(tmp_path):
    p = tmp_path / "photo.jpg"
    Image.new("RGB", (4000, 3000), (90, 120, 150)).save(p, quality=80)
    img, notes = guards.load_image(str(p))                # decoded at half size (draft), then downscaled
    assert "Uploaded image: 4000 x 3000" in notes[0] and f"{img.width} x {img.height}" in notes[0]
