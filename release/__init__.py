"""Releases: the build manifest and card, publishing numbered versions, downloading and loading them.

versions.py (version numbers, the releases.json index) <- store.py (the one interface of a release target,
its errors) <- hub_store.py (a Hub dataset repo) and fs_store.py (a directory or fsspec URL such as s3://)
<- publish.py and download.py. manifest.py and card.py describe a build.

Light dependencies only (pyarrow, datasets, webdataset, huggingface-hub, fsspec; s3fs for s3://): no Beam, no ffmpeg.
"""
