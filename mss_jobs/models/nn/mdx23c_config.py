"""MDX23C's hyperparameters: the flat mapping `build_mdx23c` takes, validated into an
`Mdx23cConfig`, and the flattening of an MSST YAML into that mapping. Pure: no torch, so config
readers can use it without loading the network code (`mdx23c.py`).

`build_mdx23c(params)` takes one flat mapping because MSST spreads the hyperparameters over
three YAML sections (`mdx23c_params_from_msst` does the flattening):

    flat key            MSST YAML key                  notes
    num_channels        model.num_channels             base width of the U-Net
    num_subbands        model.num_subbands
    num_scales          model.num_scales
    scale               model.scale                    [time, frequency] down-scaling factors
    num_blocks_per_scale model.num_blocks_per_scale
    growth              model.growth                   channels added per scale
    bottleneck_factor   model.bottleneck_factor        TDF hidden size = bins // factor
    norm                model.norm                     default "InstanceNorm"
    act                 model.act                      default "gelu"
    n_fft               audio.n_fft
    hop_length          audio.hop_length
    dim_f               audio.dim_f                    bins fed to the network
    audio_channels      audio.num_channels             renamed: clashes with model.num_channels
    instruments         training.instruments           stems = [target_instrument] when that is
    target_instrument   training.target_instrument     set, else instruments (MSST's rule)

`chunk_size`, `dim_t`, `sample_rate` and `min_mean_abs` (inference settings from `audio:`) are
accepted and ignored; any other key raises `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mss_jobs.errors import ConfigError

__all__ = [
    "ActKind",
    "Mdx23cConfig",
    "NormKind",
    "mdx23c_params_from_msst",
    "parse_act",
    "parse_norm",
]

NormKind = Literal["batch", "instance", "group", "none"]
ActKind = Literal["gelu", "relu", "elu"]

_MODEL_KEYS = (
    *("num_channels", "num_subbands", "num_scales", "scale", "num_blocks_per_scale"),
    *("growth", "bottleneck_factor", "norm", "act"),
)
_AUDIO_KEYS = ("n_fft", "hop_length", "dim_f")
_STEM_KEYS = ("instruments", "target_instrument")
_FLAT_KEYS = frozenset((*_MODEL_KEYS, *_AUDIO_KEYS, "audio_channels", *_STEM_KEYS))
_IGNORED_KEYS = frozenset({"chunk_size", "dim_t", "sample_rate", "min_mean_abs"})
_INT_KEYS = (
    *("num_channels", "num_subbands", "num_scales", "num_blocks_per_scale", "growth"),
    *("bottleneck_factor", "n_fft", "hop_length", "dim_f", "audio_channels"),
)


def _stem_count(params: Mapping[str, Any]) -> int:
    """MSST's rule: a set `target_instrument` means one stem, otherwise one per instrument."""
    if params.get("target_instrument"):
        return 1
    instruments = params.get("instruments")
    if isinstance(instruments, str) or not isinstance(instruments, Sequence) or not instruments:
        raise ConfigError(
            "MDX23C needs `target_instrument` or a non-empty `instruments` list, "
            f"got instruments={instruments!r}"
        )
    return len(instruments)


def parse_norm(norm: str) -> tuple[NormKind, int]:
    """The reference's norm rule, names included: any name it does not know means no norm.

    Returns the kind and, for `GroupNorm<groups>`, the group count (0 for the other kinds).
    """
    if norm == "BatchNorm":
        return "batch", 0
    if norm == "InstanceNorm":
        return "instance", 0
    if "GroupNorm" in norm:
        try:
            groups = int(norm.replace("GroupNorm", ""))
        except ValueError:
            raise ConfigError(f"MDX23C norm {norm!r}: expected 'GroupNorm<groups>'") from None
        if groups < 1:
            raise ConfigError(f"MDX23C norm {norm!r}: groups must be positive")
        return "group", groups
    return "none", 0


def parse_act(act: str) -> tuple[ActKind, float]:
    """The activation's kind and, for `elu<alpha>`, its alpha (1.0 when unnamed or unused)."""
    if act == "gelu":
        return "gelu", 1.0
    if act == "relu":
        return "relu", 1.0
    if act.startswith("elu"):
        try:
            alpha = float(act[3:]) if act[3:] else 1.0
        except ValueError:
            raise ConfigError(f"MDX23C act {act!r}: expected 'elu' or 'elu<alpha>'") from None
        return "elu", alpha
    raise ConfigError(f"unknown MDX23C act {act!r}; expected 'gelu', 'relu' or 'elu<alpha>'")


@dataclass(frozen=True, slots=True)
class Mdx23cConfig:
    """Validated MDX23C hyperparameters (names as in `build_mdx23c`'s flat mapping)."""

    num_channels: int
    num_subbands: int
    num_scales: int
    scale: tuple[int, int]
    num_blocks_per_scale: int
    growth: int
    bottleneck_factor: int
    n_fft: int
    hop_length: int
    dim_f: int
    num_stems: int
    audio_channels: int = 2
    norm: str = "InstanceNorm"
    act: str = "gelu"

    def __post_init__(self) -> None:
        for name in (*_INT_KEYS, "num_stems"):
            if getattr(self, name) < 1:
                raise ConfigError(f"MDX23C {name} must be positive, got {getattr(self, name)}")
        if len(self.scale) != 2 or min(self.scale) < 1:
            raise ConfigError(f"MDX23C scale must be two positive integers, got {self.scale}")
        parse_norm(self.norm)
        parse_act(self.act)
        if self.dim_f > self.n_fft // 2 + 1:
            raise ConfigError(
                f"{self.dim_f=} exceeds the {self.n_fft // 2 + 1} bins of {self.n_fft=}"
            )
        if self.dim_f % self.num_subbands:
            raise ConfigError(f"{self.dim_f=} is not divisible by {self.num_subbands=}")
        # Each scale floors the bins; the decoder's transposed convolutions only restore them when
        # no flooring happened, otherwise the skip connections would not line up.
        bins, step = self.dim_f // self.num_subbands, self.scale[1] ** self.num_scales
        if bins % step:
            raise ConfigError(
                f"{self.dim_f=} / {self.num_subbands=} = {bins} bins per sub-band must be "
                f"divisible by scale[1] ** num_scales = {step}"
            )
        if bins // step < self.bottleneck_factor:
            raise ConfigError(
                f"{self.bottleneck_factor=} leaves no features at the deepest scale "
                f"({bins // step} bins)"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Mdx23cConfig:
        unknown = sorted(set(params) - _FLAT_KEYS - _IGNORED_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown MDX23C parameter {unknown[0]!r}; known: {', '.join(sorted(_FLAT_KEYS))}"
            )
        values = {"audio_channels": 2, "norm": "InstanceNorm", "act": "gelu", **params}
        missing = sorted({*_INT_KEYS, "scale"} - set(values))
        if missing:
            raise ConfigError(f"MDX23C parameter {missing[0]!r} is missing")
        ints = {key: values[key] for key in _INT_KEYS}
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"MDX23C parameter {key!r} must be an integer, got {value!r}")
        scale, norm, act = values["scale"], values["norm"], values["act"]
        if (
            isinstance(scale, str)
            or not isinstance(scale, Sequence)
            or len(scale) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in scale)
        ):
            raise ConfigError(f"MDX23C `scale` must be two integers, got {scale!r}")
        if not isinstance(norm, str) or not isinstance(act, str):
            raise ConfigError(f"MDX23C `norm` and `act` must be strings, got {norm!r}, {act!r}")
        return cls(
            **ints,
            scale=(scale[0], scale[1]),
            num_stems=_stem_count(params),
            norm=norm,
            act=act,
        )

    @property
    def frames_multiple(self) -> int:
        """The STFT frame count (`samples // hop_length + 1`) must be a multiple of this."""
        return int(self.scale[0] ** self.num_scales)

    @property
    def spectral_channels(self) -> int:
        """Channels entering the network: (audio channel, real/imaginary, sub-band)."""
        return self.audio_channels * 2 * self.num_subbands


def mdx23c_params_from_msst(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a whole MSST YAML config (sections `model`, `audio`, `training`) into the mapping
    `build_mdx23c` takes. Every `model:` key is passed on (so an unknown one is reported); from
    `audio:` and `training:` only the keys listed in the module docstring are read."""
    sections: dict[str, Mapping[str, Any]] = {}
    for name in ("model", "audio", "training"):
        section = config.get(name)
        if not isinstance(section, Mapping):
            raise ConfigError(f"MSST config for MDX23C needs a `{name}:` section, got {section!r}")
        sections[name] = section
    model, audio, training = sections["model"], sections["audio"], sections["training"]
    clashes = sorted(set(model) & (_FLAT_KEYS - set(_MODEL_KEYS)))
    if clashes:
        raise ConfigError(f"`model.{clashes[0]}` is not an MDX23C model key (it lives elsewhere)")
    flat = dict(model)
    for key in _AUDIO_KEYS:
        if key not in audio:
            raise ConfigError(f"MSST config for MDX23C is missing `audio.{key}`")
        flat[key] = audio[key]
    flat["audio_channels"] = audio.get("num_channels", 2)
    for key in _STEM_KEYS:
        flat[key] = training.get(key)
    return flat
