"""The Python API in one place, for notebooks: every CLI command is a thin layer over these.

    from clip4rec import api
    ds = api.import_dataset("ml100k-posters", "../shared/data/ml100k-posters"); ds.save("data/ml100k")
    metrics = api.train("data/ml100k", "runs/id", api.Config())
    metrics = api.evaluate("runs/id")
"""

from clip4rec.config import Config, load_config
from clip4rec.data.dataset import Dataset
from clip4rec.data.importers import import_dataset
from clip4rec.data.splits import make_split
from clip4rec.train.run import evaluate, load_run, train

__all__ = ["Config", "Dataset", "evaluate", "import_dataset", "load_config", "load_run", "make_split", "train"]
