"""An LED (Longformer Encoder-Decoder) model on led_kernels' attention, checkpoint-compatible with
Hugging Face (``allenai/led-base-16384`` folders load as they are; our folders load in ``transformers``).

Example::

    import led

    model = led.LEDForConditionalGeneration.from_pretrained("path/to/led-base-16384")
    glob = torch.zeros_like(input_ids); glob[:, 0] = 1          # global attention on <s>
    summary = model.generate(input_ids, attention_mask=mask, global_attention_mask=glob,
                             num_beams=4, max_new_tokens=256)

Differences from ``transformers`` worth knowing (see the module docs for details):

- the encoder input is not padded to a multiple of ``attention_window`` (``pad_to_window_size=True``
  does; real-token outputs are the same either way);
- ``output_attentions=True`` computes the encoder's attention weights with a slow exact path (the
  kernels never materialise them); hidden states are unchanged;
- batches without global tokens still give the global projections (zero) gradients, so DDP does not
  see unused parameters;
- the encoder has no attention dropout (the public checkpoints use 0);
- ``past_key_values`` uses the legacy tuple format.
"""

from led.configuration import LEDConfig
from led.modeling import (
    LEDForConditionalGeneration,
    LEDForQuestionAnswering,
    LEDForSequenceClassification,
    LEDModel,
    LEDPreTrainedModel,
    shift_tokens_right,
)
from led.outputs import (
    LEDEncoderBaseModelOutput,
    LEDGenerateOutput,
    LEDSeq2SeqLMOutput,
    LEDSeq2SeqModelOutput,
    LEDSeq2SeqQuestionAnsweringModelOutput,
    LEDSeq2SeqSequenceClassifierOutput,
)

__all__ = [
    "LEDConfig",
    "LEDEncoderBaseModelOutput",
    "LEDForConditionalGeneration",
    "LEDForQuestionAnswering",
    "LEDForSequenceClassification",
    "LEDGenerateOutput",
    "LEDModel",
    "LEDPreTrainedModel",
    "LEDSeq2SeqLMOutput",
    "LEDSeq2SeqModelOutput",
    "LEDSeq2SeqQuestionAnsweringModelOutput",
    "LEDSeq2SeqSequenceClassifierOutput",
    "shift_tokens_right",
]

# The tokenizer is written separately (led/tokenization.py); until it lands the package still imports.
try:
    from led.tokenization import LEDTokenizer  # noqa: F401
except ModuleNotFoundError as exc:  # only a missing module is tolerated, not a broken one
    if exc.name not in ("led.tokenization", "tokenizers"):
        raise
else:
    __all__.append("LEDTokenizer")
