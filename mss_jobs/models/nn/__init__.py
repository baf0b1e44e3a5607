"""Neural separation architectures, each a plain `torch.nn.Module` built from the community's
hyperparameters (a builder per architecture), with parameter names matching the community
checkpoints.

    roformer.py   BS-RoFormer and Mel-Band RoFormer   build_bs_roformer, build_mel_band_roformer
    roformer_config.py  their hyperparameters (pydantic) and mel bands   mel_band_membership
    layers.py     their transformer pieces (RMSNorm, rotary embedding, attention, band split)
    mdx23c.py     MDX23C (TFC-TDF v3)                 build_mdx23c, mdx23c_params_from_msst
    mdx23c_config.py    its flat hyperparameters, MSST flattening (torch-free)
    htdemucs.py   Hybrid Transformer Demucs           build_htdemucs, load_htdemucs (the `demucs`
                  package's own module; docs/models-neural.md says why)

`forward(waveform)` takes `(batch, channels, time)` and returns `(batch, stems, channels, time)`
(the community modules return `(batch, channels, time)` for one stem; `mss_jobs.models.neural`
adapts either to the `Separator` protocol).
"""
