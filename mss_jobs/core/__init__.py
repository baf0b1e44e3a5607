"""Pure DSP core of the separation pipeline: no files, network, database, logging or Celery."""
