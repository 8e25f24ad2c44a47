"""clip4rec: multimodal sequential recommendation (frozen item encoders offline, a light user tower online)."""

from clip4rec.data.dataset import Dataset, DatasetError

__all__ = ["Dataset", "DatasetError"]
__version__ = "0.1.0"
