"""Data augmentation on tensors, batched, on the tensor's device:

    import trainmedic.augment as A

    x = A.hflip(x)                                            # images (B, C, H, W), via kornia
    x, soft = A.mixup(x, y, num_classes=10, alpha=0.2)        # or A.cutmix(...)
    loss = F.cross_entropy(model(x), soft)                    # torch takes probabilities as targets
    ids = A.mask_spans(ids, pad_id=0, mask_id=103)            # token ids (B, L)
    spec = A.time_mask(A.freq_mask(spec))                     # spectrograms (B, F, T)
    A.preview(lambda x: A.rotate(x, degrees=30), x, y, path="aug.png")
    A.check_label_preservation(model, lambda x: A.vflip(x, p=1.0), x, y).verdict

Randomness: every augmentation takes ``generator=`` (keyword), a ``torch.Generator`` on any
device; the call draws one seed from it, so the same generator state gives the same output
(on the same device) and torch's global RNG is left as it was. Without one, the draws come
from torch's global RNG, as ``torch.rand`` does.

The image functions need kornia (``pip install 'trainmedic[augment]'``), imported on first use,
except ``translate``; the others are plain torch.
"""

from trainmedic.augment.audio import add_noise, freq_mask, speed_perturb, time_mask, time_shift
from trainmedic.augment.image import (color_jitter, gaussian_noise, hflip, random_erasing, random_resized_crop,
                                      rotate, translate, vflip)
from trainmedic.augment.label_check import LabelPreservation, check_label_preservation
from trainmedic.augment.mix import cutmix, mixup
from trainmedic.augment.preview import preview
from trainmedic.augment.text import drop_tokens, mask_spans, replace_tokens

__all__ = ["LabelPreservation", "add_noise", "check_label_preservation", "color_jitter", "cutmix", "drop_tokens",
           "freq_mask", "gaussian_noise", "hflip", "mask_spans", "mixup", "preview", "random_erasing",
           "random_resized_crop", "replace_tokens", "rotate", "speed_perturb", "time_mask", "time_shift", "translate", "vflip"]
