"""The HTML report of a set of runs (`python -m benchmark.table RUNS... --html`): one page per model,
its images in a folder beside it (pages.py), the crops each model saw and the original files as
thumbnails (thumbnails.py)."""
