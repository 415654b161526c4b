"""The core per-clip stages, one module each (decode, transcript, faces, acoustics, video), and where
their models come from (models.py). Their run order is `pipelines.stages.CORE_STAGES`."""
