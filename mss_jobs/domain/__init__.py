"""The domain: the vocabulary every room shares, torch-free and import-free (pydantic aside).

    units.py      units as `Annotated` aliases (SampleRate, ChunkSize, OverlapRatio, …), enums
                  of formats and window shapes
    lifecycle.py  job and batch statuses, event kinds, lanes and priorities
    params.py     `JobParams`: what a client chooses per job; the API validates it, the database
                  stores it, the worker reads it
    derived.py    derived-stem rules (`instrumental=mixture-vocals`): parsed and checked against
                  a model's stems; the pipeline applies them (`mss_jobs.core.derived`)
    validation.py the one formatter of pydantic validation errors (`field: message; …`)

Tensor aliases (RawAudioTensor, …) live beside torch in `mss_jobs.types`; the exception tree
and its stable error codes in `mss_jobs.errors`. Both sit in this layer: everything may import
them, they import nothing above.
"""

__all__: list[str] = []
