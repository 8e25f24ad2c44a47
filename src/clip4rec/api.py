"""The Python API in one place, for notebooks: every CLI command is a thin layer over these.

    from clip4rec import api
    ds = api.import_dataset("ml100k-posters", "../shared/data/ml100k-posters"); ds.save("data/ml100k")
    metrics = api.train("data/ml100k", "runs/id", api.Config())   # train, then evaluate
    run = api.Run.load("runs/id")                                  # model, item table, cases: no Dataset needed
    metrics = api.evaluate("runs/id")
"""

from clip4rec.config import Config, load_config
from clip4rec.data.dataset import Dataset
from clip4rec.data.importers import import_dataset
from clip4rec.data.splits import make_split
from clip4rec.evaluate.evaluator import evaluate
from clip4rec.experiments.pipeline import train_and_evaluate as train
from clip4rec.model.artifact import Run

__all__ = ["Config", "Dataset", "Run", "evaluate", "import_dataset", "load_config", "make_split", "train"]
