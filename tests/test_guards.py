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
    for r in (0, -1, 1.5, "abc", None):
        with pytest.raises(InputError, match="keep_ratio"):
            guards.check_settings(r, "iwp", ["iwp"])
    with pytest.raises(InputError, match="Unknown method"):
        guards.check_settings(0.5, "nope", ["iwp"])


def test_missing_input():
    with pytest.raises(InputError, match="upload an image or a video"):
        guards.choose_input(None, None)
    assert guards.choose_input("a.png", None) == "image"
    assert guards.choose_input(None, "a.mp4") == "video"


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
    assert "downscaled" in notes[0]
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
