"""Integrations with other libraries. Importing this package imports none of them."""

from led_kernels.integrations.hf import patch_hf_model, unpatch_hf_model

__all__ = ["patch_hf_model", "unpatch_hf_model"]
