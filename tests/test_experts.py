"""Expert files: bit-exact round trip, header, cache resolution and one clear error per kind of bad file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unisync_loss import experts
from unisync_loss.experts import (
    METADATA_KEY,
    ExpertFileError,
    default_expert_path,
    expert_home,
    load_expert,
    read_expert_header,
    resolve_expert,
    save_expert,
)
from unisync_loss.model import UniSyncConfig
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS


def _tensors_and_header(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        header = json.loads(handle.metadata()[METADATA_KEY])
    return tensors, header


def test_round_trip_is_bit_exact_for_every_head(make_model, make_input, tmp_path) -> None:
    model = make_model(AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS)
    model.set_statistics("hubert", torch.linspace(-1, 1, 24), torch.linspace(0.5, 2, 24))
    model.set_statistics("3dmm", torch.full((16,), 0.3), torch.full((16,), 1.7))
    path = save_expert(model, tmp_path / "sub" / "all.safetensors", training={"steps": 12, "val_accuracy": 0.5})
    loaded = load_expert(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config == model.config
    for audio in AUDIO_REPRESENTATIONS:
        for visual in VISUAL_REPRESENTATIONS:
            a, v = make_input(audio, model.config), make_input(visual, model.config)
            assert torch.equal(loaded(a, v, audio, visual), model(a, v, audio, visual))
    assert torch.equal(loaded.audio_heads["hubert"].preprocess.standardize.std, torch.linspace(0.5, 2, 24))
    assert sorted(p.name for p in path.parent.iterdir()) == ["all.safetensors"]


def test_header_records_representations_dims_and_training(make_expert) -> None:
    header = read_expert_header(make_expert("hubert", "landmarks"))
    assert header["format_version"] == 1
    assert header["audio"] == {"hubert": {"dim": 24}}
    assert header["visual"]["landmarks"]["points"] == 68
    assert header["window"] == 5 and header["embed_dim"] == 16
    assert header["config"]["hidden"] == 16
    assert header["training"] == {"kind": "random init"}
    assert load_expert(make_expert("mel", "3dmm")).expert_header["training"] == {"kind": "random init"}


def test_training_summary_must_be_json(make_model, tmp_path) -> None:
    with pytest.raises(ValueError, match="training summary must be JSON-serialisable"):
        save_expert(make_model(["mel"], ["rgb"]), tmp_path / "x.safetensors", training={"tensor": torch.zeros(1)})


def test_expert_home_respects_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("UNISYNC_HOME", str(tmp_path / "home"))
    assert expert_home() == tmp_path / "home"
    assert default_expert_path("hubert", "3dmm") == tmp_path / "home" / "experts" / "hubert_3dmm.safetensors"
    monkeypatch.delenv("UNISYNC_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert expert_home() == tmp_path / "xdg" / "unisync"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert expert_home() == tmp_path / "user" / ".cache" / "unisync"


def test_resolution_through_the_cache(make_model, unisync_home) -> None:
    exported = save_expert(make_model(["mel"], ["rgb"]), default_expert_path("mel", "rgb"))
    assert resolve_expert("mel", "rgb") == exported
    multi = save_expert(make_model(AUDIO_REPRESENTATIONS, ["landmarks", "3dmm"]), unisync_home / "experts" / "multi.safetensors")
    assert resolve_expert("hubert", "3dmm") == multi
    assert resolve_expert("mel", "rgb", weights=str(multi)) == multi
    assert load_expert("multi").has_heads("hubert", "landmarks")


def test_nothing_found_says_where_it_looked_and_how_to_get_one(unisync_home) -> None:
    with pytest.raises(ExpertFileError) as caught:
        resolve_expert("hubert", "parsing")
    message = str(caught.value)
    assert str(unisync_home / "experts" / "hubert_parsing.safetensors") in message
    assert "python -m pretrain.train --config pretrain/configs/hubert_parsing.yaml" in message
    assert "weights=PATH" in message


def test_missing_file_and_missing_bundled_expert(unisync_home, tmp_path, monkeypatch) -> None:
    with pytest.raises(ExpertFileError, match=f"looked at {tmp_path / 'none.safetensors'}"):
        resolve_expert("mel", "rgb", weights=tmp_path / "none.safetensors")
    with pytest.raises(ExpertFileError, match=f"looked at .*{unisync_home / 'experts' / 'mel_rgb.safetensors'}"):
        load_expert("mel_rgb")
    monkeypatch.setattr(experts, "BUNDLED_DIR", tmp_path / "no-bundled-experts")
    with pytest.raises(ExpertFileError, match="procedural_mel_rgb.safetensors"):
        resolve_expert("mel", "rgb", weights="procedural")


CORRUPTIONS = [
    ("missing tensor", lambda tensors, header: tensors.pop("visual_unified.project.bias"),
     "missing tensor\\(s\\) visual_unified.project.bias"),
    ("unexpected tensor", lambda tensors, header: tensors.update({"extra.weight": torch.zeros(2)}),
     "unexpected tensor\\(s\\) extra.weight"),
    ("shape mismatch", lambda tensors, header: tensors.update({"audio_heads.hubert.preprocess.standardize.mean": torch.zeros(25)}),
     "standardize.mean has shape \\(25,\\), its config needs \\(24,\\)"),
    ("header disagrees with tensors", lambda tensors, header: header["config"]["visual"]["3dmm"].update(dim=32),
     "has shape .* its config needs"),
    ("wrong format version", lambda tensors, header: header.update(format_version=2),
     "expert format version 2, this unisync-loss reads version 1"),
    ("invalid config", lambda tensors, header: header["config"].update(visual={"flow": {}}),
     "architecture config in the header is invalid .*unknown representation 'flow'"),
]


@pytest.mark.parametrize(("corrupt", "message"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_inconsistent_expert_file(make_expert, corrupt, message) -> None:
    path = make_expert("hubert", "3dmm")
    tensors, header = _tensors_and_header(path)
    corrupt(tensors, header)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(header)})
    with pytest.raises(ExpertFileError, match=message):
        load_expert(path)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_bytes(make_expert, keep) -> None:
    path = make_expert("mel", "3dmm")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ExpertFileError, match="truncated or corrupt"):
        load_expert(path)


def test_garbage_bytes(tmp_path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    with pytest.raises(ExpertFileError, match="not a readable safetensors file"):
        load_expert(path)


def test_non_expert_safetensors(tmp_path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ExpertFileError, match="a safetensors file but not a UniSync expert"):
        load_expert(path)


def test_expert_errors_are_value_errors() -> None:
    assert issubclass(ExpertFileError, ValueError)


def test_every_listed_name_loads_everywhere_an_expert_is_accepted(make_model, unisync_home, tmp_path, capsys) -> None:
    """Each expert `unisync experts` lists (cached and bundled), by the name it prints with or without
    `.safetensors`, loads with load_expert, UniSyncLoss(weights=...), `unisync info` and pretrain.evaluate."""
    from pretrain import evaluate
    from unisync_loss import UniSyncLoss, cli

    save_expert(make_model(["mel"], ["landmarks"]), default_expert_path("mel", "landmarks"))
    listing = cli.list_experts()
    files = sorted(experts.experts_dir().glob("*.safetensors")) + sorted(experts.BUNDLED_DIR.glob("*.safetensors"))
    assert len(files) == 1 + len(AUDIO_REPRESENTATIONS) * len(VISUAL_REPRESENTATIONS) + 1  # + procedural_unified
    data = tmp_path / "one_short_clip.yaml"  # held-out speaker spk002 of a 3-speaker corpus: one 0.8 s clip
    data.write_text("model: {audio: {mel: {}}, visual: {3dmm: {dim: 64}}}\n"
                    "data: {kind: procedural, speakers: 3, clips_per_speaker: 1, seconds: 0.8, preset: easy}\n")
    for path in files:
        assert path.name in listing or path.stem in listing
        header = read_expert_header(path)
        audio, visual = next(iter(header["audio"])), next(iter(header["visual"]))
        config = UniSyncConfig.from_dict(header["config"]).to_dict()  # the header's config with today's option defaults
        for name in (path.stem, path.name):
            assert experts._existing_file(name).samefile(path)
            assert load_expert(name).config.to_dict() == config
            assert UniSyncLoss(audio, visual, weights=name).expert.config.to_dict() == config
            assert cli.main(["info", name]) == 0
            assert json.loads(capsys.readouterr().out) == header
        result = evaluate.main(["--expert", path.stem, "--audio", audio, "--visual", visual, "--data", str(data),
                                "--out", str(tmp_path / "eval" / path.stem)])  # a joint expert needs the pair named
        assert (result["expert"], result["audio"], result["visual"], result["clips"]) == (path.stem, audio, visual, 1)
        assert f"wrote {tmp_path / 'eval' / path.stem / 'eval.json'}" in capsys.readouterr().out


def test_an_unknown_name_says_where_it_looked(unisync_home) -> None:
    with pytest.raises(ExpertFileError) as caught:
        load_expert("procedural_mel_flow")
    message = str(caught.value)
    assert str(unisync_home / "experts" / "procedural_mel_flow.safetensors") in message
    assert str(experts.BUNDLED_DIR / "procedural_mel_flow.safetensors") in message
    with pytest.raises(ExpertFileError, match="python -m pretrain.train"):
        resolve_expert("mel", "rgb", weights="procedural_mel_flow")
