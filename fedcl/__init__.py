"""fedcl: federated-continual learning simulation for histopathology segmentation."""

__version__ = "0.4.0"
