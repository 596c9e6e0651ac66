"""Normalization layers: BatchNorm (and, later, MVN).

Kernels: the math vocabulary (``kernels/{cpu,gpu}/math.py``) unless a fused kernel pays.
"""
