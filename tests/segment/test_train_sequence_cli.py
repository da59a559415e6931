"""`blockrag segment train-sequence`: the command a maintainer retrains the shipped segmenter with
(TRAINING.md) trains on the real MiniLM, writes a loadable format-6 directory with its decision
and provenance, reuses its cache, and refuses the acceptance set's sources."""

from __future__ import annotations

import json
import random

import pytest
from test_training import instance
from typer.testing import CliRunner

from blockrag.cli.segment import app
from blockrag.segment.default import load_segmenter
from blockrag.segment.sequence import FORMAT, HeadEnsemble
from blockrag.segment.train.data import Instance, write_jsonl
from blockrag.segment.train.training import SUPPRESS_GRID, THRESHOLD_GRID
from blockrag.segment.train.word_scores import score_words


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("seq") / "data.jsonl"
    rng = random.Random(0)
    write_jsonl(path, [instance(rng) for _ in range(16)])
    return path


def test_trains_a_loadable_ensemble_and_reuses_its_cache(tmp_path, data, monkeypatch):
    args = ["train-sequence", "--data", str(data), "--out", str(tmp_path / "model"), "--epochs", "30",
            "--hidden", "16", "--layers", "1", "--lr", "0.01", "--members", "2", "--validation", "0.25",
            "--cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache").glob("data.jsonl.*.pt"))) == 1
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format"] == FORMAT and config["members"] == 2 and config["hidden"] == 16
    assert config["threshold"] in THRESHOLD_GRID and config["suppress"] in SUPPRESS_GRID
    assert config["training"]["instances"] == 12 and config["training"]["validation_instances"] == 4
    assert config["training"]["cuts"] == 12 * 3  # 4 segments a text
    segmenter = load_segmenter(tmp_path / "model", lambda t: len(t.split()))
    assert isinstance(segmenter.model.head, HeadEnsemble)
    # the topic alternates every 3 lines: a trained head cuts a new text there
    text = instance(random.Random(7))
    found = set(segmenter.cut_offsets(text.text))
    assert len(found & set(text.boundaries)) >= 2
    # score-words scores it as prose-dev is scored (in words), beside the baselines
    reference = tmp_path / "dev.jsonl"
    held = [instance(random.Random(k)) for k in (11, 12, 13)]
    reference.write_text("".join(json.dumps({"text": i.text, "boundaries": i.boundaries}) + "\n" for i in held))
    scored = CliRunner().invoke(app, ["score-words", "--data", str(reference), "--model", str(tmp_path / "model"),
                                      "--out", str(tmp_path / "rows.json")])
    assert scored.exit_code == 0, scored.output
    rows = {r["method"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert len(rows) == 8 and rows["no split"]["recall"] == 0.0 and rows["paragraph split"]["recall"] == 0.0
    direct = score_words([(i.text, i.boundaries) for i in held], lambda t: segmenter.cut_offsets(t, 0.5))
    assert rows["learned, granularity 0.5"]["pk"] == pytest.approx(direct.pk)
    assert rows["learned, granularity 0.5"]["f1"] == pytest.approx(direct.f1)
    (tmp_path / "bad.jsonl").write_text('{"text": "no boundaries"}\n')
    bad = CliRunner().invoke(app, ["score-words", "--data", str(tmp_path / "bad.jsonl"), "--model",
                                   str(tmp_path / "model")], env={"COLUMNS": "400"})
    assert bad.exit_code != 0 and "not a JSONL of objects with text and boundaries" in bad.output

    # a second run reads the embeddings from the cache: it embeds nothing
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded again despite the cache")

    monkeypatch.setattr("blockrag.segment.train.sequence_training.featurize_units", no_embedding)
    again = CliRunner().invoke(app, [*args[:4], str(tmp_path / "again"), *args[5:]])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "head.safetensors").is_file()


def test_refuses_the_acceptance_sources(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [Instance("One line.\nTwo line.", [10], "prose", "concat",
                                "concat:/usr/share/common-licenses/GPL-3 | /usr/share/doc/x/README")])
    result = CliRunner().invoke(app, ["train-sequence", "--data", str(path), "--out", str(tmp_path / "m")],
                                env={"COLUMNS": "400"})
    assert result.exit_code != 0 and "may not be training data" in result.output
    assert not (tmp_path / "m").exists()
