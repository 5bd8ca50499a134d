"""The seven emotion classes, in the one canonical order used everywhere (SPEC §1)."""

EMOTIONS: tuple[str, ...] = ("neutral", "happiness", "anger", "sadness", "fear", "disgust", "surprise")
NUM_CLASSES: int = len(EMOTIONS)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}
