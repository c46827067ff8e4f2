"""The ZeroGPU duration asked for one comparison, and the requirements a ZeroGPU Space accepts."""
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from PIL import Image

from iwp.demo import zerogpu
from iwp.demo.zerogpu import gpu_duration

ROOT = Path(__file__).resolve().parent.parent


def test_duration_grows_with_the_input_and_is_capped(tmp_path, monkeypatch):
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(small)
    Image.new("RGB", (1920, 1080)).save(big)
    args = ("What is it?", 0.25, "iwp", 2, 0.5, 32, 2.0)          # compare's other arguments
    d_small, d_big = gpu_duration(str(small), None, *args), gpu_duration(str(big), None, *args)
    d_video = gpu_duration(None, "clip.mp4", *args)
    assert zerogpu.BASE_S < d_small < d_big <= zerogpu.MAX_S and d_video > d_small
    assert gpu_duration(str(tmp_path / "missing.png"), None) == d_big     # unreadable: the largest image's
    monkeypatch.setenv("IWP_MAX_NEW_TOKENS", "100000")
    assert gpu_duration(str(big), None) == zerogpu.MAX_S


def _requirements(python: str) -> dict[str, set[str]]:
    """requirements.txt as pip sees it on this Python: name -> the specifiers that apply."""
    out: dict[str, set[str]] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            if r.marker is None or r.marker.evaluate({"python_version": python}):
                out.setdefault(r.name, set()).add(str(r.specifier))
    return out


def test_requirements_for_here_and_for_a_zerogpu_space():
    """Here (3.11) the CPU torch the README installs first satisfies them, with no torchvision; on the Space (the
    front matter's Python) a torch ZeroGPU runs (2.8.0, 2.9.1, 2.10.0, 2.11.0) with its own torchvision."""
    front = (ROOT / "README.md").read_text().split("---")[1]
    space_python = re.search(r'^python_version:\s*"?([\d.]+)', front, re.M).group(1)
    assert space_python in {"3.10.13", "3.12.12", "3.10", "3.12"}
    here, space = _requirements("3.11"), _requirements(space_python)
    assert all(SpecifierSet(s).contains("2.13.0") for s in here["torch"]) and "torchvision" not in here
    pinned = {s for s in space["torch"] if s.startswith("==")}
    assert len(pinned) == 1 and pinned <= {"==2.8.0", "==2.9.1", "==2.10.0", "==2.11.0"}
    assert all(SpecifierSet(s).contains(next(iter(pinned))[2:]) for s in space["torch"])
    assert space["torchvision"] == {{"==2.8.0": "==0.23.0", "==2.9.1": "==0.24.1", "==2.10.0": "==0.25.0",
                                     "==2.11.0": "==0.26.0"}[next(iter(pinned))]}


def test_requirements_list_the_library_and_demo_dependencies():
    """No `-e .` (a Space installs requirements.txt before the repository is there): the library's and the demo
    extra's dependencies, as pyproject.toml states them."""
    text = (ROOT / "requirements.txt").read_text()
    assert not any(line.strip().startswith(("-e", ".")) for line in text.splitlines())
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["demo"]
    listed = {line.split("#")[0].strip() for line in text.splitlines()}
    assert set(wanted) <= listed
