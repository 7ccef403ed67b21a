"""``generate``: greedy and beam search for :class:`led.LEDForConditionalGeneration`.

The encoder runs once (``global_attention_mask`` goes to it); the decoder runs one token per step
on its KV cache (``use_cache=False`` re-runs the whole prefix instead). Token choices follow
``transformers`` 5.x exactly, so the same weights give the same tokens:

- lengths: ``max_new_tokens`` wins over ``max_length``; with neither, 20 new tokens; ``min_length``
  (or ``min_new_tokens``) counts the decoder prompt (the start token);
- logits processors, in Hugging Face's order: ``no_repeat_ngram_size``, ``min_length``,
  ``forced_bos_token_id``, ``forced_eos_token_id``, applied to float32 scores (to the log-softmax
  for beam search);
- greedy: argmax; finished rows continue with ``pad_token_id``;
- beam search: Hugging Face's vectorised algorithm (top ``max(2, 1 + #eos) * num_beams``
  continuations per step, ``length_penalty``, ``early_stopping`` True / False / ``"never"`` with its
  stopping heuristic), ``num_return_sequences`` best hypotheses per input.

Defaults come from the model's ``generation_config`` (the folder's ``generation_config.json``, else
legacy generation keys of ``config.json``, else the config's special token ids). As in transformers
5.x, no encoder ``attention_mask`` is inferred from padding tokens: pass it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from led.outputs import LEDEncoderBaseModelOutput, LEDGenerateOutput, PastKeyValues, encoder_output
from led_kernels._validation import as_int

_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "num_beams": 1,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "early_stopping": False,
    "num_return_sequences": 1,
    "use_cache": True,
}
_SPECIAL = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _ban_repeated_ngrams(input_ids: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    # forbid every token that would complete an n-gram already present in the hypothesis
    rows, cur_len = input_ids.shape
    if cur_len + 1 < n:
        return scores
    scores = scores.clone()
    for i, tokens in enumerate(input_ids.tolist()):
        prefix = tuple(tokens[cur_len + 1 - n :])
        banned = [tokens[j + n - 1] for j in range(cur_len - n + 1) if tuple(tokens[j : j + n - 1]) == prefix]
        if banned:
            scores[i, banned] = float("-inf")
    return scores


class _Processors:
    """The logits processors of one ``generate`` call (Hugging Face's order)."""

    def __init__(self, no_repeat_ngram_size, min_length, eos, forced_bos, forced_eos, max_length):
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.min_length = min_length
        self.eos = eos
        self.forced_bos = forced_bos
        self.forced_eos = forced_eos
        self.max_length = max_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cur_len = input_ids.shape[-1]
        if self.no_repeat_ngram_size > 0:
            scores = _ban_repeated_ngrams(input_ids, scores, self.no_repeat_ngram_size)
        if self.min_length > 0 and self.eos is not None and cur_len < self.min_length:
            is_eos = torch.isin(torch.arange(scores.shape[-1], device=scores.device), self.eos)
            scores = torch.where(is_eos, float("-inf"), scores)
        if self.forced_bos is not None and cur_len == 1:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.forced_bos] = 0
        if self.forced_eos is not None and cur_len == self.max_length - 1:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.forced_eos] = 0
        return scores


def _gather_beams(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # tensor (B, K, ...) indexed along the beam dim by index (B, K')
    index = index.view(*index.shape, *([1] * (tensor.dim() - index.dim())))
    return torch.take_along_dim(tensor, index, dim=1)


def _check_lengths(**lengths: Any) -> None:
    """Lengths as ints (None: unset): max_new_tokens >= 1, the others >= 0 (a float was cut to an int
    silently, a string failed deep inside, a negative minimum or n-gram size was taken as off)."""
    for name, value in lengths.items():
        if value is None:
            continue
        value = as_int(value, name, "an int or None")
        low = 1 if name == "max_new_tokens" else 0
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_search(num_beams, num_return_sequences, length_penalty) -> None:
    """Beam-search settings that would otherwise fail deep inside (a reshape, a division by zero)."""
    for name, value in (("num_beams", num_beams), ("num_return_sequences", num_return_sequences)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")


def _check_token_id(name: str, value, vocab_size: int) -> None:
    if value is not None and not (isinstance(value, int) and 0 <= value < vocab_size):
        raise ValueError(f"{name} must be a token id in [0, vocab_size={vocab_size}), got {value!r}")


class GenerationMixin:
    """Adds :meth:`generate` to a model whose forward takes ``encoder_outputs``/``past_key_values``."""

    @property
    def generation_config(self) -> dict[str, Any]:
        """Generation defaults (a plain dict with Hugging Face's key names)."""
        config = self.__dict__.get("_generation_config")
        if config is None:
            from led.checkpoint import GENERATION_KEYS

            config = {k: getattr(self.config, k) for k in _SPECIAL}
            config.update({k: self.config.extra[k] for k in GENERATION_KEYS if k in self.config.extra})
            self.__dict__["_generation_config"] = config
        return config

    @generation_config.setter
    def generation_config(self, value: dict[str, Any]) -> None:
        self.__dict__["_generation_config"] = dict(value)

    @staticmethod
    def _reorder_cache(past: PastKeyValues, beam_idx: torch.Tensor) -> PastKeyValues:
        """Select the self-attention cache rows ``beam_idx`` (beam search's survivors) in every layer.

        The cross-attention keys/values are left in place: beams only move within their own input,
        whose beams all hold the same encoder keys/values, so reordering them (as transformers does)
        would copy (beams x encoder length x d_model) per layer and step for nothing.
        """
        return tuple(
            (layer[0].index_select(0, beam_idx), layer[1].index_select(0, beam_idx), *layer[2:])
            for layer in past
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        global_attention_mask: torch.Tensor | None = None,
        *,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
        min_length: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        length_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        early_stopping: bool | str | None = None,
        num_return_sequences: int | None = None,
        decoder_start_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        forced_bos_token_id: int | None = None,
        forced_eos_token_id: int | list[int] | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: LEDEncoderBaseModelOutput | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        do_sample: bool | None = None,
        return_dict_in_generate: bool = False,
        max_global: int | None = None,
        pad_to_window_size: bool | None = None,
    ) -> torch.Tensor | LEDGenerateOutput:
        """Greedy (``num_beams=1``) or beam search, token-for-token like ``transformers``.

        Args:
            input_ids: (B, N) encoder ids (or ``inputs_embeds``, or precomputed ``encoder_outputs``).
            attention_mask: (B, N) encoder padding mask, 1 = token (not inferred from padding ids).
            global_attention_mask: (B, N) encoder global attention (e.g. 1 on the first ``<s>``).
            max_length, max_new_tokens, min_length, min_new_tokens: lengths; ``max_length`` and
                ``min_length`` include the decoder prompt (the start token).
            num_beams, length_penalty, early_stopping, num_return_sequences: beam search.
            no_repeat_ngram_size: forbid repeating n-grams of this size.
            decoder_start_token_id, eos_token_id, pad_token_id, bos_token_id: special ids
                (``eos_token_id`` may be a list).
            forced_bos_token_id, forced_eos_token_id: force the first / last token.
            decoder_input_ids: a decoder prompt (the start token is prepended when missing).
            use_cache: decode on the KV cache (default True).
            do_sample: only False is supported.
            return_dict_in_generate: return :class:`LEDGenerateOutput` instead of the ids.
            max_global, pad_to_window_size: passed to the encoder (see :meth:`led.LEDEncoder.forward`).

        Returns:
            (B * num_return_sequences, L) token ids starting with the decoder prompt.

        Example::

            >>> glob = torch.zeros_like(ids); glob[:, 0] = 1
            >>> model.generate(ids, attention_mask=mask, global_attention_mask=glob, num_beams=4,
            ...                max_new_tokens=64, no_repeat_ngram_size=3)
        """
        gen = self.generation_config

        def pick(name: str, value: Any) -> Any:
            if value is not None:
                return value
            if gen.get(name) is not None:
                return gen[name]
            return _DEFAULTS.get(name)

        if pick("do_sample", do_sample):
            raise NotImplementedError(
                "sampling (do_sample=True) is not implemented; use greedy or beam search"
            )
        has_default_max_length = max_length is None and gen.get("max_length") is None
        max_new_tokens = pick("max_new_tokens", max_new_tokens)
        min_new_tokens = pick("min_new_tokens", min_new_tokens)
        max_length, min_length = pick("max_length", max_length), pick("min_length", min_length)
        num_beams = pick("num_beams", num_beams)
        length_penalty = pick("length_penalty", length_penalty)
        no_repeat_ngram_size = pick("no_repeat_ngram_size", no_repeat_ngram_size)
        early_stopping = pick("early_stopping", early_stopping)
        num_return_sequences = pick("num_return_sequences", num_return_sequences)
        use_cache = pick("use_cache", use_cache)
        bos = pick("bos_token_id", bos_token_id)
        decoder_start = pick("decoder_start_token_id", decoder_start_token_id)
        decoder_start = bos if decoder_start is None else decoder_start
        if decoder_start is None:
            raise ValueError("decoder_start_token_id (or bos_token_id) must be set for generation")
        eos = pick("eos_token_id", eos_token_id)
        pad = pick("pad_token_id", pad_token_id)
        forced_bos, forced_eos = (
            pick("forced_bos_token_id", forced_bos_token_id),
            pick("forced_eos_token_id", forced_eos_token_id),
        )
        _check_search(num_beams, num_return_sequences, length_penalty)
        _check_lengths(
            max_length=max_length, max_new_tokens=max_new_tokens, min_length=min_length,
            min_new_tokens=min_new_tokens, no_repeat_ngram_size=no_repeat_ngram_size,
        )  # fmt: skip
        if early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
        for name, value in (
            ("decoder_start_token_id", decoder_start),
            ("forced_bos_token_id", forced_bos),
            ("forced_eos_token_id", forced_eos),
        ):
            _check_token_id(name, value, self.config.vocab_size)

        # encoder, once
        if encoder_outputs is None:
            encoder_outputs = self.get_encoder()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                global_attention_mask=global_attention_mask,
                inputs_embeds=inputs_embeds,
                return_dict=True,
                max_global=max_global,
                pad_to_window_size=pad_to_window_size,
            )
        else:
            encoder_outputs = encoder_output(encoder_outputs, self.config.d_model)
        hidden = encoder_outputs.last_hidden_state
        batch, device = hidden.shape[0], hidden.device
        if decoder_input_ids is not None and (
            decoder_input_ids.dim() != 2
            or decoder_input_ids.shape[0] != batch
            or decoder_input_ids.shape[1] == 0
        ):
            raise ValueError(
                f"decoder_input_ids must be (B, L) with B = {batch} (the inputs' batch) and L >= 1, "
                f"got shape {tuple(decoder_input_ids.shape)}"
            )

        eos_t = None if eos is None else torch.tensor(eos, dtype=torch.long, device=device).view(-1)
        if pad is None and eos_t is not None:
            pad = int(eos_t[0])
        start = torch.full((batch, 1), decoder_start, dtype=torch.long, device=device)
        if decoder_input_ids is None:
            decoder_input_ids = start
        elif bool((decoder_input_ids[:, 0] != decoder_start).all()):
            decoder_input_ids = torch.cat([start, decoder_input_ids.to(device)], dim=-1)
        prompt_len = decoder_input_ids.shape[1]
        if max_new_tokens is not None:
            max_length = max_new_tokens + prompt_len
        elif has_default_max_length:
            max_length = _DEFAULTS["max_length"] + prompt_len
        if min_new_tokens is not None:
            min_length = min_new_tokens + prompt_len
        if prompt_len >= max_length:
            raise ValueError(
                f"the decoder prompt has {prompt_len} tokens but max_length is {max_length}; "
                "increase max_length or set max_new_tokens"
            )
        processors = _Processors(no_repeat_ngram_size, min_length, eos_t, forced_bos, forced_eos, max_length)

        if num_beams == 1:
            if num_return_sequences != 1:
                raise ValueError("greedy search returns one sequence per input; use num_beams > 1")
            sequences = self._greedy(
                decoder_input_ids,
                encoder_outputs,
                attention_mask,
                processors,
                max_length,
                eos_t,
                pad,
                use_cache,
            )
            scores = None
        else:
            if num_return_sequences > num_beams:
                raise ValueError(
                    f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams})"
                )
            expanded = LEDEncoderBaseModelOutput(last_hidden_state=hidden.repeat_interleave(num_beams, dim=0))
            mask = None if attention_mask is None else attention_mask.repeat_interleave(num_beams, dim=0)
            sequences, scores = self._beam_search(
                decoder_input_ids.repeat_interleave(num_beams, dim=0),
                expanded,
                mask,
                processors,
                max_length,
                eos_t,
                pad,
                use_cache,
                num_beams,
                length_penalty,
                early_stopping,
                num_return_sequences,
            )
        if return_dict_in_generate:
            return LEDGenerateOutput(
                sequences=sequences, sequences_scores=scores, encoder_outputs=encoder_outputs
            )
        return sequences

    def _decode_step(self, tokens, encoder_outputs, attention_mask, past, use_cache):
        # logits of the last position (float32, as transformers) and the updated cache
        out = self(
            encoder_outputs=encoder_outputs,
            attention_mask=attention_mask,
            decoder_input_ids=tokens,
            past_key_values=past,
            use_cache=use_cache,
            return_dict=True,
        )
        return out.logits[:, -1, :].float(), out.past_key_values

    def _greedy(
        self, sequences, encoder_outputs, attention_mask, processors, max_length, eos, pad, use_cache
    ):
        unfinished = torch.ones(sequences.shape[0], dtype=torch.bool, device=sequences.device)
        past, tokens = None, sequences
        while True:
            logits, past = self._decode_step(tokens, encoder_outputs, attention_mask, past, use_cache)
            next_tokens = processors(sequences, logits).argmax(dim=-1)
            if eos is not None:
                next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad))
            sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
            done = torch.full_like(unfinished, sequences.shape[1] >= max_length)
            if eos is not None:
                done = done | torch.isin(next_tokens, eos)
            unfinished = unfinished & ~done
            if not bool(unfinished.any()):
                return sequences
            tokens = next_tokens[:, None] if use_cache else sequences

    def _beam_search(
        self,
        input_ids,
        encoder_outputs,
        attention_mask,
        processors,
        max_length,
        eos,
        pad,
        use_cache,
        num_beams,
        length_penalty,
        early_stopping,
        num_return_sequences,
    ):
        """Hugging Face 5.x's vectorised beam search (same tensors, same tie-breaking)."""
        device = input_ids.device
        k = num_beams
        batch = input_ids.shape[0] // k
        cur_len = prompt_len = input_ids.shape[1]
        keep = max(2, 1 + (0 if eos is None else eos.shape[0])) * k
        top_k_mask = torch.arange(keep, device=device) < k
        # the value transformers fills unused positions with (``pad or eos[0]``, -1 without eos)
        fill = -1 if eos is None else (pad if pad else int(eos[0]))

        running = torch.full((batch, k, max_length), fill, dtype=torch.long, device=device)
        running[:, :, :cur_len] = input_ids.view(batch, k, cur_len)
        finished = running.clone()
        running_scores = torch.zeros(batch, k, device=device)
        running_scores[:, 1:] = -1e9  # only the first beam's tokens are considered at the first step
        finished_scores = torch.full((batch, k), -1e9, device=device)
        is_finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
        improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
        running_origin = torch.full((batch, k, max_length - cur_len), -1, dtype=torch.int32, device=device)
        finished_origin = running_origin.clone()
        batch_offset = torch.arange(batch, device=device).view(-1, 1) * k

        past = None
        while True:
            flat = running[:, :, :cur_len].reshape(batch * k, cur_len)
            tokens = flat[:, -1:] if use_cache and past is not None else flat
            logits, past = self._decode_step(tokens, encoder_outputs, attention_mask, past, use_cache)
            log_probs = processors(flat, F.log_softmax(logits, dim=-1))
            vocab = log_probs.shape[-1]
            log_probs = (log_probs.view(batch, k, vocab) + running_scores[:, :, None]).view(batch, k * vocab)

            # a. the best `keep` continuations over all beams
            topk_scores, topk_index = torch.topk(log_probs, keep)
            topk_beam = topk_index // vocab
            topk_origin = _gather_beams(running_origin, topk_beam)
            topk_seqs = _gather_beams(running, topk_beam)
            topk_ids = topk_index % vocab
            topk_seqs[:, :, cur_len] = topk_ids
            topk_origin[:, :, cur_len - prompt_len] = (topk_beam + batch_offset).to(torch.int32)

            # b. which of them stop here (eos or length)
            hits = torch.full_like(topk_ids, cur_len + 1 >= max_length, dtype=torch.bool)
            if eos is not None:
                hits = hits | torch.isin(topk_ids, eos)

            # c. the best `k` that go on
            go_on = topk_scores + hits.to(torch.float32) * -1.0e9
            chosen = torch.topk(go_on, k)[1]
            running = _gather_beams(topk_seqs, chosen)
            running_scores = _gather_beams(go_on, chosen)
            running_origin = _gather_beams(topk_origin, chosen)

            # d. merge the ones that just finished into the finished set
            just_finished = hits & top_k_mask[None, :]
            scored = topk_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
            batch_full = torch.all(is_finished, dim=-1, keepdim=True) & (early_stopping is True)
            scored = scored + batch_full.to(torch.float32) * -1.0e9
            scored = scored + (~improvable).to(torch.float32) * -1.0e9
            scored = scored + (~just_finished) * -1.0e9
            merged_scores = torch.cat([finished_scores, scored], dim=1)
            best = torch.topk(merged_scores, k)[1]
            finished = _gather_beams(torch.cat([finished, topk_seqs], dim=1), best)
            finished_scores = _gather_beams(merged_scores, best)
            finished_origin = _gather_beams(torch.cat([finished_origin, topk_origin], dim=1), best)
            is_finished = _gather_beams(torch.cat([is_finished, just_finished], dim=1), best)

            # e. the cache follows the surviving beams
            if use_cache:
                past = self._reorder_cache(past, running_origin[..., cur_len - prompt_len].reshape(-1).long())
            cur_len += 1

            # f. stop when no running beam can beat the finished ones (transformers' heuristic)
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_length - prompt_len
            else:
                best_length = cur_len - prompt_len
            best_running = running_scores[:, :1] / (best_length**length_penalty)
            worst_finished = torch.where(
                is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], -1.0e9
            )
            improvable = improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
            open_beams = ~(torch.all(is_finished) & (early_stopping is True))
            if not bool(torch.any(improvable) & open_beams & ~torch.all(hits)):
                break

        sequences = finished[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
        scores = finished_scores[:, :num_return_sequences].reshape(-1)
        origin = finished_origin[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
        generated = int(((origin + 1).bool()).sum(dim=1).max())
        return sequences[:, : prompt_len + generated], scores
