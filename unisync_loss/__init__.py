"""unisync-loss: the UniSync lip-sync expert as a differentiable loss."""
__version__ = "0.1.0"
