"""Denoising networks and their weights files."""

from fluoden_batch.models.dncnn import DnCNN, fold_batch_norm
from fluoden_batch.models.fused import FusedDnCNN
from fluoden_batch.models.unet import UNet
from fluoden_batch.models.weights import (
    Architecture,
    LoadedModel,
    ModelMetadata,
    Normalisation,
    load_model,
    load_trainable,
    read_metadata,
    resolve_weights,
    save_weights,
    shipped_models,
)

__all__ = [
    "Architecture",
    "DnCNN",
    "FusedDnCNN",
    "LoadedModel",
    "ModelMetadata",
    "Normalisation",
    "UNet",
    "fold_batch_norm",
    "load_model",
    "load_trainable",
    "read_metadata",
    "resolve_weights",
    "save_weights",
    "shipped_models",
]
