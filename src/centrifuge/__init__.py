"""visual-centrifuge: learn to separate videos into layers (Alayrac, Carreira, Zisserman, CVPR 2019)."""

__version__ = "0.1.0"
