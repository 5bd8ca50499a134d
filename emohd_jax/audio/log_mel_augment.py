"""Training augmentation of stored VGGish log-mel patches, as speech emotion work does it on the signal.

The shards hold log(mel + 0.01) of 0.96 s patches, not waveforms, so the signal-level operations
are done on the mel magnitudes recovered from the log (exp(x) - 0.01, exact up to float rounding):

- gain: mel magnitudes scale linearly with the waveform's amplitude, so multiplying them by
  10^(g/20) is an exact gain of g dB (the log offset is re-applied afterwards, which an additive
  offset in the log domain would get wrong for quiet frames);
- noise: a random floor added to the mel magnitudes. An approximation of adding background noise
  to the waveform: magnitudes of independent signals do not add exactly, and the floor is flat
  across mel bands where white noise would grow with the band's width;
- time shift: a circular roll of the patch by a few frames (the wrapped frames are a discontinuity
  the masks also produce, so it stays small);
- SpecAugment-style masks (Park et al., 2019): time and frequency stripes set to the patch mean.

`LogMelAugment` is a grain `RandomMap`: the loader seeds `rng` per record, so a resumed run sees the
same augmented patches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from emohd_jax.audio.log_mel import VGGISH_LOG_MEL

# |rfft| peak of a full-scale sine through the 400-sample periodic Hann window (N/4): the mel
# magnitude of a full-scale tone in its band, the 0 dB reference of the noise floor.
FULL_SCALE_MEL = VGGISH_LOG_MEL.window_length / 4


@dataclasses.dataclass(frozen=True)
class LogMelAugment(grain.transforms.RandomMap):
    """Random gain, noise floor, time shift and masks on record['patches']: [96, 64] log-mel."""

    max_shift: int = 16                              # frames
    gain_db: float = 6.0                             # gain uniform in ±gain_db
    noise_db: tuple[float, float] = (-90.0, -60.0)   # noise floor level range, dB re FULL_SCALE_MEL
    time_masks: int = 2
    time_mask_max: int = 12                          # frames
    freq_masks: int = 2
    freq_mask_max: int = 8                           # mel bands
    log_offset: float = VGGISH_LOG_MEL.log_offset

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        return {**element, "patches": self.augment_patch(np.asarray(element["patches"]), rng)}

    def augment_patch(self, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """patch: [frames, mel] log-mel → an augmented copy, float32."""
        mel = np.maximum(np.exp(patch.astype(np.float64)) - self.log_offset, 0.0)  # [frames, mel] magnitudes
        mel *= 10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0)
        floor = FULL_SCALE_MEL * 10.0 ** (rng.uniform(*self.noise_db) / 20.0)
        mel += floor * np.abs(rng.standard_normal(mel.shape))
        out = np.log(mel + self.log_offset)
        if self.max_shift:
            out = np.roll(out, rng.integers(-self.max_shift, self.max_shift + 1), axis=0)
        fill = out.mean()
        for axis, count, widest in ((0, self.time_masks, self.time_mask_max), (1, self.freq_masks, self.freq_mask_max)):
            for _ in range(count):
                width = int(rng.integers(0, widest + 1))
                start = int(rng.integers(0, out.shape[axis] - width + 1))
                index = [slice(None), slice(None)]
                index[axis] = slice(start, start + width)
                out[tuple(index)] = fill
        return out.astype(np.float32)
