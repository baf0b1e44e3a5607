"""JobParams: the one model of a job's parameters, as the API, the database and the worker read
it. No services needed."""

from __future__ import annotations

import pytest

from mss_jobs.domain.params import parse_params
from mss_jobs.errors import ConfigError
from mss_jobs.runner import OutputSpec


def test_params_accept_json_lists_and_defaults() -> None:
    params = parse_params({"stems": ["vocals"], "derived": ["inst=mixture-vocals"], "overlap": 0})

    assert params.stems == ("vocals",)
    assert params.derived == ("inst=mixture-vocals",)
    assert params.overlap == 0
    assert OutputSpec.for_job(params).format == "flac"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"batch_size": "4"}, "batch_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"format": "ogg"}, "format"),
        ({"bit_depth": 8}, "bit_depth"),
        ({"extra": True}, "extra"),
    ],
)
def test_bad_params_are_a_config_error_naming_the_key(
    params: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_params(params)
