"""The model registry: listing is free, unknown names fail with the known ones."""

from __future__ import annotations

import pytest
import torch

from mss_jobs.errors import ConfigError, UnknownModelError
from mss_jobs.models.base import Separator
from mss_jobs.models.identity import IdentitySeparator
from mss_jobs.models.registry import create_separator, get_spec, list_models


def test_list_models_includes_identity_and_hpss() -> None:
    names = [spec.name for spec in list_models()]
    assert "identity" in names
    assert "dsp-hpss" in names
    assert len(names) == len(set(names))
    for spec in list_models():
        assert spec.description
        assert spec.stems


def test_specs_declare_their_stems() -> None:
    assert get_spec("identity").stems == ("mixture",)
    assert get_spec("dsp-hpss").stems == ("harmonic", "percussive")


@pytest.mark.parametrize("name", ["demucs", "", "Identity", "identity "])
def test_unknown_model_lists_the_known_ones(name: str) -> None:
    with pytest.raises(UnknownModelError) as error:
        create_separator(name)
    message = str(error.value)
    assert repr(name) in message
    assert "dsp-hpss" in message
    assert "identity" in message
    assert isinstance(error.value, ConfigError)
    assert error.value.code == "model.unknown"
    with pytest.raises(UnknownModelError):
        get_spec(name)


def test_create_identity() -> None:
    separator = create_separator("identity")
    assert isinstance(separator, Separator)  # the protocol is runtime-checkable
    assert isinstance(separator, IdentitySeparator)
    assert separator.device == torch.device("cpu")
    assert separator.stems == get_spec("identity").stems
    on_cpu = create_separator("identity", device=torch.device("cpu"))
    assert on_cpu.device == torch.device("cpu")


def test_protocol_rejects_objects_that_are_not_separators() -> None:
    assert not isinstance(object(), Separator)
    assert not isinstance(torch.nn.Identity(), Separator)
