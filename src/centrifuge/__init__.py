"""visual-centrifuge: learn to separate videos into layers (Alayrac, Carreira, Zisserman, CVPR 2019).

Python API::

    import centrifuge
    result = centrifuge.separate("video.mp4", out_dir="layers/")   # the packaged model by default
    model, info = centrifuge.load_model()                          # or load_model("run/folder")
"""

__version__ = "0.1.0"

from .checkpoint import load_model  # noqa: E402
from .losses import pit_loss, reconstruction_loss  # noqa: E402
from .model import ModelConfig, build_model  # noqa: E402

# The function shadows its module's name on the package on purpose (``centrifuge.separate(...)``); import
# the module's other names with ``from centrifuge.separate import ...``.
from .separate import SeparationResult, separate  # noqa: E402

__all__ = ["ModelConfig", "SeparationResult", "build_model", "load_model", "pit_loss", "reconstruction_loss",
           "separate"]
