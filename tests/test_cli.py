"""The ``unisync`` command: listing experts and printing a header."""
import json

import pytest

from unisync_loss.cli import main
from unisync_loss.experts import save_expert


def test_experts_lists_the_cache_and_info_prints_the_header(make_model, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("UNISYNC_HOME", str(tmp_path))
    save_expert(make_model(["hubert"], ["3dmm"]), tmp_path / "experts" / "hubert_3dmm.safetensors",
                training={"test_accuracy": 0.875})
    (tmp_path / "experts" / "broken.safetensors").write_bytes(b"not an expert")
    assert main(["experts"]) == 0
    listing = capsys.readouterr().out
    assert "hubert_3dmm.safetensors: audio [hubert] x visual [3dmm], T=5, held-out sync accuracy 0.875" in listing
    # bundled experts record the pooled 24-speaker figure, which the listing prefers over the run's own test split
    assert "procedural_hubert_3dmm.safetensors: audio [hubert] x visual [3dmm], T=5, held-out sync accuracy 0.765 ± 0.014 (24 speakers, chance 0.107)" in listing
    assert "broken.safetensors: not a usable expert" in listing
    assert main(["info", "hubert_3dmm"]) == 0
    header = json.loads(capsys.readouterr().out)
    assert header["window"] == 5 and list(header["visual"]) == ["3dmm"]


def test_info_on_a_missing_expert_says_where_it_looked(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("UNISYNC_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "mel_rgb"])
    assert exit_info.value.code == 2
    assert str(tmp_path / "experts" / "mel_rgb.safetensors") in capsys.readouterr().err
