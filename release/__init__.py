"""Releases: the build manifest and card, publishing versions to the Hub or a directory/URL, downloading and loading them.

Light dependencies only (pyarrow, datasets, webdataset, huggingface-hub, fsspec): no Beam, no ffmpeg.
"""
