"""Frame sampling with OpenCV: uniform picks, caps on frames, duration, pixels and decode work, undecodable
files, and the awkward uploads (no frame count, MJPEG .mov, 4K) within time and memory."""
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from iwp.demo.video import VideoError, sample_frames
from tests.videos import ROOT, raw_m4v, write_video


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


def _level_matches(frame, index):
    """Frame `index` of write_video has grey level 8 index (mod 256); MPEG-4 blurs it a little."""
    d = abs(int(frame[4, 4, 0]) - index * 8 % 256)
    return min(d, 256 - d) <= 8


def test_raw_stream_without_frame_count_is_streamed_once_and_sampled_evenly(tmp_path):
    path = raw_m4v(tmp_path / "raw.m4v", 300)
    assert not 0 < cv2.VideoCapture(path).get(cv2.CAP_PROP_FRAME_COUNT) < 10_000_000   # no usable count
    clip = sample_frames(path, max_frames=8)
    assert clip.frames_read == 300 and clip.total_frames == 300
    assert len(clip.frames) == 8 and clip.indices[0] == 0 and clip.indices[-1] >= 250
    gaps = np.diff(clip.indices)
    assert gaps.min() > 0 and gaps.max() <= 2 * gaps.min() + 32                       # evenly spread
    assert all(_level_matches(f, i) for f, i in zip(clip.frames, clip.indices))     # the right frames


def test_mjpeg_mov(tmp_path):
    clip = sample_frames(write_video(tmp_path / "m.mov", 40, fourcc="MJPG"), max_frames=4)
    assert len(clip.frames) == 4 and clip.indices[-1] >= 35
    assert all(_level_matches(f, i) for f, i in zip(clip.frames, clip.indices))


def test_decode_caps_stop_the_pass_and_say_so(tmp_path):
    path = raw_m4v(tmp_path / "long.m4v", 400)
    clip = sample_frames(path, max_frames=4, max_decoded_pixels=64 * 48 * 100)     # room for 100 frames
    assert clip.frames_read == 100 and max(clip.indices) < 100 and "first" in clip.notes[-1]
    with pytest.raises(VideoError, match="time limit"):
        sample_frames(path, max_decode_seconds=0)


def test_frames_larger_than_8k_are_refused_before_decoding(tmp_path, monkeypatch):
    import iwp.demo.video as video
    monkeypatch.setattr(video, "MAX_SOURCE_PIXELS", 64 * 48 - 1)
    with pytest.raises(VideoError, match="limit is 8K"):
        video.sample_frames(write_video(tmp_path / "v.mp4", 3))


# The sampler alone in a fresh interpreter (loaded from its file: no torch), so that its peak RSS is its own.
_SAMPLE = (
    "import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('video', sys.argv[1]); "
    "video = importlib.util.module_from_spec(spec); sys.modules['video'] = video; spec.loader.exec_module(video); "
    "clip = video.sample_frames(sys.argv[2]); "
    "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
    "print(json.dumps({'indices': clip.indices, 'shape': list(clip.frames[0].shape), 'peak_kb': int(peak)}))")


def _sample_in_subprocess(path):
    """(result, wall seconds, peak RSS in MB) of sample_frames(path) with the demo's default caps. The peak
    is the child's own VmHWM (getrusage's children maxrss would include this big pytest process, which
    the child inherits at fork)."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _SAMPLE, str(ROOT / "iwp" / "demo" / "video.py"), path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    return found, time.monotonic() - start, found["peak_kb"] / 1024


def test_4k_stream_without_frame_count_within_time_and_memory(tmp_path):
    """The upload that used to exhaust memory: 4K frames, no frame count. Every 4K frame is 25 MB, so the
    old read-everything pass held over 400 MB for these 16 frames (and 37 GB for a 192 KB real one);
    the streaming pass holds only its downscaled picks plus the decoder's own buffers."""
    path = raw_m4v(tmp_path / "4k.m4v", 16, size=(3840, 2160), noise=True)
    found, wall, rss_mb = _sample_in_subprocess(path)
    assert len(found["indices"]) == 8 and found["indices"][-1] >= 12
    assert found["shape"][0] * found["shape"][1] <= 640 * 640
    assert wall < 30 and rss_mb < 400, (wall, rss_mb)
