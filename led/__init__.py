"""An LED (Longformer Encoder-Decoder) model on led_kernels' attention.

The model classes (``LEDConfig``, ``LEDModel``, ``LEDForConditionalGeneration``, ...) are not part of
this version yet; this package reserves the name and the layout.
"""

__all__: list[str] = []
