"""PlatformConfig.kv_compression: parsed once at load from the Serve config's string, refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blockrag.errors import InvalidRequestError
from blockrag.kvcache.compression import KVCompression
from blockrag_services.config import PlatformConfig

ROOT = Path(__file__).resolve().parents[2]


def test_default_is_uncompressed() -> None:
    assert PlatformConfig().kv_compression is KVCompression.NONE
    assert PlatformConfig.from_args({}).kv_compression is KVCompression.NONE


@pytest.mark.parametrize("name", ["none", "int8_head", "int8_token", "fp8_head"])
def test_a_setting_is_parsed_from_its_name_and_round_trips(name: str) -> None:
    config = PlatformConfig.from_args({"kv_compression": name})
    assert config.kv_compression is KVCompression(name)
    assert PlatformConfig.from_args(config.to_args()).kv_compression is KVCompression(name)


@pytest.mark.parametrize("bad", ["int4", "INT8", "", None, 8, True])
def test_an_unknown_setting_is_refused_at_load(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="kv_compression must be one of none, int8_head, int8_token, fp8_head"):
        PlatformConfig.from_args({"kv_compression": bad})


@pytest.mark.parametrize("name", ["local", "production"])
def test_serve_configs_name_a_valid_setting(name: str) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "serve" / f"{name}.yaml").read_text())
    for app in config["applications"]:
        assert PlatformConfig.from_args(app["args"]).kv_compression is KVCompression.NONE


def test_gate_settings_default_and_range() -> None:
    config = PlatformConfig()
    assert (config.kv_compression_gate_questions, config.kv_compression_max_kl) == (8, 0.02)
    assert PlatformConfig.from_args({"kv_compression_gate_questions": 0}).kv_compression_gate_questions == 0
    for bad in ({"kv_compression_gate_questions": -1}, {"kv_compression_gate_questions": 1.5},
                {"kv_compression_gate_questions": True}, {"kv_compression_max_kl": 0},
                {"kv_compression_max_kl": float("inf")}, {"kv_compression_max_kl": "0.02"}):
        with pytest.raises(InvalidRequestError, match=next(iter(bad))):
            PlatformConfig.from_args(bad)
