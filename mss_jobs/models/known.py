"""The community models this service knows by name: where their files are and what they give.

Torch-free data (the API lists it). Each entry names the architecture, the stems in the model's
output order, the config file (MSST YAML) and the checkpoint(s), with a SHA-256 where one is
published, and what is known of the weights' license. Sources of these facts: splifft's model
registry (`splifft/data/registry.json`: URLs and digests) and demucs' own model list
(`demucs/remote/files.txt`, bag files `htdemucs*.yaml`).

Digests: demucs names its files `<signature>-<first 8 hex of sha256>.th` (torch.hub's rule), so
those are verified by prefix; the Kim Mel-Band RoFormer digest is splifft's; for the others no
digest is published (`sha256=None`: the file is trusted as served over HTTPS and cached by
URL). The MSST configs are read from the repository's `main` branch, which can change: a digest
is not pinned for them for that reason, and the registry checks that the config it got still
gives the stems listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mss_jobs.errors import UnknownModelError
from mss_jobs.models.config_base import Architecture
from mss_jobs.models.weights import Resource

__all__ = ["KNOWN_MODELS", "KnownModel", "get_known_model"]

_MSST_CONFIGS = "https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/main"
_DEMUCS = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer"
_DEMUCS_LICENSE = "MIT (the demucs repository's license, under which Meta released the weights)"
_UNSTATED = "no license stated by the publisher; check the terms before commercial use"


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A named community model. `config` None: the checkpoint carries its hyperparameters
    (demucs packages). Several checkpoints with `bag_weights` form a bag (demucs' per-stem
    specialists): row m gives model m's share of each stem."""

    name: str
    architecture: Architecture
    description: str
    stems: tuple[str, ...]
    checkpoints: tuple[Resource, ...]
    config: Resource | None = None
    bag_weights: tuple[tuple[float, ...], ...] | None = None
    license: str = _UNSTATED
    homepage: str | None = None

    @property
    def resources(self) -> tuple[Resource, ...]:
        """Every file the model needs, config first."""
        return ((self.config,) if self.config is not None else ()) + self.checkpoints


def _demucs(signature: str, digest: str) -> Resource:
    return Resource(f"{_DEMUCS}/{signature}-{digest}.th", sha256=digest)


_DEMUCS_STEMS = ("drums", "bass", "other", "vocals")

KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="bs-roformer-viperx-1297",
            architecture="bs_roformer",
            description="BS-RoFormer vocals by viperx (ep 317, SDR 12.9755 on vocals); a common "
            "base for fine-tunes. Derive the instrumental as mixture-vocals",
            stems=("vocals",),
            config=Resource(
                f"{_MSST_CONFIGS}/configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml"
            ),
            checkpoints=(
                Resource(
                    "https://github.com/TRvlvr/model_repo/releases/download/"
                    "all_public_uvr_models/model_bs_roformer_ep_317_sdr_12.9755.ckpt"
                ),
            ),
            homepage="https://github.com/ZFTurbo/Music-Source-Separation-Training",
        ),
        KnownModel(
            name="mel-roformer-kim-vocals",
            architecture="mel_band_roformer",
            description="Mel-Band RoFormer vocals by Kimberley Jensen. Derive the instrumental "
            "as mixture-vocals",
            stems=("vocals",),
            config=Resource(
                f"{_MSST_CONFIGS}/configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml"
            ),
            checkpoints=(
                Resource(
                    "https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main/"
                    "MelBandRoformer.ckpt",
                    sha256="87201f4d31afb5bc79993230fc49446918425574db48c01c405e44f365c7559e",
                ),
            ),
            homepage="https://huggingface.co/KimberleyJSN/melbandroformer",
        ),
        KnownModel(
            name="mdx23c-vocals",
            architecture="mdx23c",
            description="MDX23C (TFC-TDF v3) vocals/other by ZFTurbo (SDR 10.17 on vocals)",
            stems=("vocals", "other"),
            config=Resource(f"{_MSST_CONFIGS}/configs/config_vocals_mdx23c.yaml"),
            checkpoints=(
                Resource(
                    "https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/"
                    "download/v1.0.0/model_vocals_mdx23c_sdr_10.17.ckpt"
                ),
            ),
            license="MIT (the Music-Source-Separation-Training repository, which releases it)",
            homepage="https://github.com/ZFTurbo/Music-Source-Separation-Training",
        ),
        KnownModel(
            name="htdemucs",
            architecture="htdemucs",
            description="Hybrid Transformer Demucs (v4), 4 stems; demucs' default model",
            stems=_DEMUCS_STEMS,
            checkpoints=(_demucs("955717e8", "8726e21a"),),
            license=_DEMUCS_LICENSE,
            homepage="https://github.com/facebookresearch/demucs",
        ),
        KnownModel(
            name="htdemucs_ft",
            architecture="htdemucs",
            description="Hybrid Transformer Demucs fine-tuned: one specialist per stem (a bag "
            "of 4 models, 4x the compute of htdemucs, slightly better)",
            stems=_DEMUCS_STEMS,
            checkpoints=(
                _demucs("f7e0c4bc", "ba3fe64a"),
                _demucs("d12395a8", "e57c48e6"),
                _demucs("92cfc3b6", "ef3bcb9c"),
                _demucs("04573f0d", "f3cf25b2"),
            ),
            bag_weights=(
                (1.0, 0.0, 0.0, 0.0),
                (0.0, 1.0, 0.0, 0.0),
                (0.0, 0.0, 1.0, 0.0),
                (0.0, 0.0, 0.0, 1.0),
            ),
            license=_DEMUCS_LICENSE,
            homepage="https://github.com/facebookresearch/demucs",
        ),
        KnownModel(
            name="htdemucs_6s",
            architecture="htdemucs",
            description="Hybrid Transformer Demucs, 6 stems: adds guitar and piano (demucs "
            "notes that its piano stem is of low quality)",
            stems=(*_DEMUCS_STEMS, "guitar", "piano"),
            checkpoints=(_demucs("5c90dfd2", "34c22ccb"),),
            license=_DEMUCS_LICENSE,
            homepage="https://github.com/facebookresearch/demucs",
        ),
    )
}


def get_known_model(name: str) -> KnownModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown community model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}"
        ) from None
