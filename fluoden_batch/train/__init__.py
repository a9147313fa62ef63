"""Training DnCNN denoisers: data (pairs, clean images, synthetic noise), loop, checkpoints."""

from fluoden_batch.train.config import TrainConfig
from fluoden_batch.train.loop import TrainResult, denoise_whole, train, validation_psnr

__all__ = ["TrainConfig", "TrainResult", "denoise_whole", "train", "validation_psnr"]
