"""Frame sampling with OpenCV: uniform picks, caps on frames, duration and pixels, undecodable files."""
import cv2
import numpy as np
import pytest

from iwp.demo.video import VideoError, sample_frames


def write_video(path, n, fps=10.0, size=(64, 48)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), i * 8 % 256, np.uint8))    # frame i has grey level 8 i
    w.release()
    return str(path)


def test_uniform_sampling_in_rgb_order(tmp_path):
    clip = sample_frames(write_video(tmp_path / "v.mp4", 30), max_frames=4)
    assert clip.indices == [0, 10, 19, 29]
    assert clip.total_frames == 30 and clip.fps == pytest.approx(10.0) and clip.duration == pytest.approx(3.0)
    for i, f in zip(clip.indices, clip.frames):
        assert f.shape == (48, 64, 3) and f.dtype == np.uint8
        assert abs(int(f[10, 10, 0]) - i * 8) <= 6                    # the right frame came back
    assert clip.notes == []


def test_short_video_gives_every_frame(tmp_path):
    clip = sample_frames(write_video(tmp_path / "v.mp4", 3), max_frames=8)
    assert clip.indices == [0, 1, 2]


def test_long_video_is_sampled_from_the_first_window_not_refused(tmp_path):
    clip = sample_frames(write_video(tmp_path / "long.mp4", 40, fps=2.0), max_frames=4, max_seconds=5)
    assert len(clip.frames) == 4 and max(clip.indices) <= 9           # 5 s at 2 fps = frames 0..9
    assert "20 s long" in clip.notes[0] and "first 5 s" in clip.notes[0]


def test_frames_are_downscaled_to_the_pixel_cap(tmp_path):
    clip = sample_frames(write_video(tmp_path / "big.mp4", 4, size=(640, 480)), max_frames=2, max_pixels=100 * 100)
    h, w = clip.frames[0].shape[:2]
    assert h * w <= 100 * 100 and abs(w / h - 640 / 480) < 0.05


@pytest.mark.parametrize("content", [b"", b"this is not a video at all", bytes(range(256)) * 40])
def test_undecodable_files_raise_video_error(tmp_path, content):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(VideoError):
        sample_frames(str(p))


def test_missing_file_raises_video_error(tmp_path):
    with pytest.raises(VideoError):
        sample_frames(str(tmp_path / "nope.mp4"))
