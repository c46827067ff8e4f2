"""The multi-GPU benchmark's code path on the CPU: meta build -> balanced map -> weights made in place -> dispatch,
then unpruned and pruned generation through accelerate's hooks, and the JSON it writes."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

pytest.importorskip("accelerate")

import iwp
from iwp.bench import configs as realsize, multigpu as bench_multigpu, real_size as bench_models

GiB = 2**30


@pytest.fixture(scope="module")
def built():
    config = realsize.qwen72b_config(small=True)
    model, device_map, facts = bench_multigpu.build(config, virtual=2)
    return config, model, device_map, facts


def test_build_matches_a_normally_built_model(built):
    config, model, device_map, facts = built
    ref = bench_models.build_model(config, "cpu")
    params, ref_params = dict(model.named_parameters()), dict(ref.named_parameters())
    assert {k: (v.shape, v.dtype) for k, v in params.items()} == {k: (v.shape, v.dtype) for k, v in ref_params.items()}
    buffers, ref_buffers = dict(model.named_buffers()), dict(ref.named_buffers())
    assert buffers.keys() == ref_buffers.keys() and any("inv_freq" in k for k in buffers)
    for k, b in ref_buffers.items():                     # rotary inv_freq etc.: recomputed, not left random
        assert buffers[k].dtype == b.dtype and torch.equal(buffers[k], b), k
    assert not any(t.is_meta for t in (*params.values(), *buffers.values()))
    for name, p in params.items():
        if name.endswith("norm.weight") or ".norm1." in name or ".norm2." in name or "ln_q" in name:
            assert bool((p == 1).all()), name
        elif name.endswith(".bias"):
            assert bool((p == 0).all()), name
    w = params["model.language_model.layers.0.mlp.gate_proj.weight"].float()
    assert abs(w.std().item() - bench_multigpu.STD) < 0.003 and abs(w.mean().item()) < 0.003
    assert hasattr(model.model.language_model.layers[0], "_hf_hook")     # accelerate's dispatch hooks are on
    assert set(device_map.values()) == {"cpu"}
    place = bench_multigpu.placement(model, device_map, 2)
    assert place["vision_tower"] == place["layer_k"] == "cpu"


def test_the_72b_map_splits_layers_evenly_over_two_gpus():
    model = bench_multigpu.empty_model(realsize.qwen72b_config(small=False))        # meta: no memory used
    assert 73.0e9 < sum(p.numel() for p in model.parameters()) < 73.8e9            # Qwen2.5-VL-72B: 73.4 B
    rope = model.model.language_model.rotary_emb                                   # real buffers, not meta
    assert torch.equal(rope.inv_freq, type(rope)(config=model.config.text_config).inv_freq)
    assert rope.inv_freq.numel() == 64 and not any(b.is_meta for b in model.buffers())
    device_map = bench_multigpu.plan(model, {0: 130 * GiB, 1: 130 * GiB})
    place = bench_multigpu.placement(model, device_map, layer=2)
    layers = place["decoder_layers"]
    assert set(layers) == {"cuda:0", "cuda:1"} and layers["cuda:0"][2] + layers["cuda:1"][2] == 80
    assert abs(layers["cuda:0"][2] - layers["cuda:1"][2]) <= 6
    assert place["vision_tower"] == place["layer_k"] == place["embed_tokens"] == "cuda:0"
    assert place["lm_head"] == "cuda:1"
    with pytest.raises(RuntimeError, match="does not fit"):
        bench_multigpu.plan(model, {0: 40 * GiB, 1: 40 * GiB})


def test_dispatched_model_generates_like_the_plain_model(built):
    config, model, _, _ = built
    plain = bench_models.build_model(config, "cpu")
    plain.load_state_dict(model.state_dict())
    prompt = bench_models.build_prompt(model, "image", {"size": (56, 84)})
    outs = []
    for m in (model, plain):
        for ratio in (1.0, 0.25):
            iwp.apply(m, keep_ratio=ratio, layer=2)
            with torch.no_grad():
                outs.append(m.generate(**prompt.kwargs, max_new_tokens=3, do_sample=False))
        iwp.remove(m)
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], outs[3])


def test_cli_end_to_end_on_cpu(tmp_path, capsys):
    path = tmp_path / "multigpu.json"
    argv = ["--small", "--input", "image", "--size", "56,84", "--repeats", "1", "--warmup", "1", "--new-tokens", "2",
            "--json", str(path)]
    assert bench_multigpu.main(argv) == 0
    res = json.loads(path.read_text())
    env = res["env"]
    assert env["gpu_count"] == 0 and env["command"].endswith(" ".join(argv))
    assert {"torch", "transformers", "accelerate", "gpus", "multicast_env"} <= env.keys()
    assert env["multicast_env"]["NCCL_NVLS_ENABLE"] == "0"
    virtual = res["build"]["virtual_placement"]
    assert len(virtual["decoder_layers"]) == 2 and virtual["vision_tower"] == "virtual:0"   # really split in two
    image = res["inputs"]["image"]
    assert image["parity"]["keep_1_token_identical"] is True
    runs = {r["method"]: r for r in image["runs"]}
    assert set(runs) == {"none", "iwp", "random"} and all(r["repeats"] == 1 and not r["error"] for r in runs.values())
    assert runs["none"]["n_tokens"] == image["n_total"]
    kept = image["n_total"] - image["n_visual"] + round(0.111 * image["n_visual"])
    assert runs["iwp"]["n_tokens"] == runs["random"]["n_tokens"] == image["parity"]["pruned_tokens"] == kept
    med = runs["iwp"]["median"]
    assert med["ttft_ms"] > med["decoder_prefill_ms"] > 0 and med["decode_tok_s"] > 0 and med["peak_gib"] is None
    assert runs["iwp"]["speedup"]["ttft"] > 0
    assert "| iwp | 11.1% |" in capsys.readouterr().out
    assert bench_multigpu.main(["--report", str(path)]) == 0
    assert "| random | 11.1% |" in capsys.readouterr().out
