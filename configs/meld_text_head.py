"""Text head over frozen MiniLM features of MELD: the encoder runs once (`emohd prepare`), heads train on its vectors.

    emohd prepare --config meld_text_head    # MELD → MiniLM mean-pooled vectors [1, 384] per utterance
    emohd train   --config meld_text_head    # one head, selected on dev weighted F1
    emohd sweep   --config meld_text_head --sweep meld_text

`backbone` is the text tower's own config (`configs/meld_text.py`): its tokenizer, encoder and pooling make
the features, so `--config.backbone.model.init=...` sweeps heads over another encoder.
"""

import ml_collections

from configs import common, meld_text


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = common.run("feature_head", "meld_text_head")
    c.backbone = meld_text.get_config()
    c.data = common.data("meld", "work/shards/meld_text_features")

    c.model = ml_collections.ConfigDict()
    c.model.feature_dim = 384       # MiniLM's width
    c.model.head_hidden = 256       # 0 = a linear head
    c.model.head_dropout = 0.1
    c.model.input_norm = False      # BatchNorm over the features first
    c.model.pretrained = False      # the head starts fresh; the encoder's part is in the shards

    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 1e-4
    c.train.batch_size = 32
    c.train.num_epochs = 3
    c.train.shuffle_seed = 0        # the data order; `seed` (initialisation, dropout) can vary over one stream
    c.train.checkpoint_every = 1000
    c.eval.batch_size = 256
    if arg:
        raise ValueError(f"unknown variant {arg!r} (none)")
    return c
