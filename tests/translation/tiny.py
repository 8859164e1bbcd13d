"""The tiny Transformer that CLI-level translation tests train in seconds (``--set`` items)."""

#: Model overrides: 32 wide, 2 heads, one encoder and one decoder layer.
TINY_TRANSFORMER = [
    "model.d_model=32",
    "model.num_heads=2",
    "model.ffn_hidden=64",
    "model.num_encoder_layers=1",
    "model.num_decoder_layers=1",
]
