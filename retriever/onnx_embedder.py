"""ONNX Runtime embedder: the same sentence-transformers model, exported once from its local
files into a cache (fp32, or int8 with dynamic quantization), then run without torch.

The export needs torch and transformers (already installed for the torch backend) and nothing
from a hub; it takes a few seconds and is reused by every later start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import retriever.privacy  # noqa: F401
from retriever.made_once import made_once
from retriever.token_batches import batches_by_length

log = logging.getLogger(__name__)

# Bump when the export recipe changes: the cache key includes it, so old files are not reused.
EXPORT_RECIPE = 1
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxExportError(RuntimeError):
    pass


class SentenceModelLayout:
    """Where a local sentence-transformers model keeps its transformer, pooling and limits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        modules = _read_json(path / "modules.json", default=[])
        kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules}
        transformer = kinds.get("Transformer", {"path": ""})
        self.transformer_dir = path / str(transformer.get("path", ""))
        pooling_dir = path / str(kinds.get("Pooling", {}).get("path", "1_Pooling"))
        pooling = _read_json(pooling_dir / "config.json", default={})
        if pooling.get("pooling_mode_cls_token"):
            self.pooling = "cls"
        elif pooling.get("pooling_mode_mean_tokens", True):
            self.pooling = "mean"
        else:
            raise OnnxExportError(
                f"{path.name}: the ONNX backend supports mean or CLS pooling only; "
                'use embed_backend = "torch" for this model'
            )
        self.normalize = "Normalize" in kinds or not modules
        config = _read_json(path / "sentence_bert_config.json", default={})
        self.max_tokens = int(config.get("max_seq_length") or 256)
        tokenizer = self.transformer_dir / "tokenizer.json"
        if not tokenizer.is_file():
            tokenizer = path / "tokenizer.json"
        if not tokenizer.is_file():
            raise OnnxExportError(f"{path.name}: no tokenizer.json (a fast tokenizer) to run it")
        self.tokenizer_file = tokenizer


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def onnx_model_path(model_id: str, cache_dir: Path, quantize: bool) -> Path:
    name = "model-int8.onnx" if quantize else "model.onnx"
    return cache_dir / f"{model_id}-r{EXPORT_RECIPE}" / name


def export_onnx(model_path: Path, model_id: str, cache_dir: Path, quantize: bool) -> Path:
    """The cached ONNX file for this model, exported first if missing (`made_once`: safe
    against several processes starting at once)."""
    fp32 = onnx_model_path(model_id, cache_dir, quantize=False)
    target = onnx_model_path(model_id, cache_dir, quantize)
    if target.is_file():
        return target
    log.info("exporting the embedder to ONNX%s (once)", " int8" if quantize else "")
    # The optimizer and quantizer log every node at INFO on the root logger.
    logging.disable(logging.INFO)
    try:
        made_once(fp32, lambda out: _export_fp32(model_path, out))
        if quantize:
            made_once(target, lambda out: _quantize(fp32, out))
    except OnnxExportError:
        raise
    except Exception as exc:
        raise OnnxExportError(
            f"could not export the embedder to ONNX ({type(exc).__name__}: {exc}); "
            'set embed_backend = "torch" to use it without ONNX Runtime'
        ) from exc
    finally:
        logging.disable(logging.NOTSET)
    log.info("embedder exported to %s", target)
    return target


def _export_fp32(model_path: Path, out: Path) -> None:
    """torch -> ONNX (TorchScript exporter, dynamic batch and length), then ONNX Runtime's
    BERT fusions (attention, layer norm, GELU)."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig, AutoModel

    layout = SentenceModelLayout(model_path)
    config = AutoConfig.from_pretrained(str(layout.transformer_dir), local_files_only=True)
    # Eager attention traces into plain ops that the optimizer can fuse.
    model = AutoModel.from_pretrained(
        str(layout.transformer_dir), local_files_only=True, attn_implementation="eager"
    ).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    raw = out.with_name("raw.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(model),
            (sample, sample, torch.zeros_like(sample)),
            str(raw),
            input_names=list(INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    heads = int(getattr(config, "num_attention_heads", 0))
    hidden = int(getattr(config, "hidden_size", 0))
    if getattr(config, "model_type", "") in ("bert", "roberta", "xlm-roberta", "mpnet"):
        optimize_model(
            str(raw), model_type="bert", num_heads=heads, hidden_size=hidden
        ).save_model_to_file(str(out))
    else:
        shutil.copyfile(raw, out)


def _quantize(source: Path, out: Path) -> None:
    """Dynamic int8: weights per channel, activations quantized at run time. Only MatMul
    nodes: quantizing the fused attention too cost accuracy for no measurable speed."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


class OnnxEmbedder:
    """Normalized float32 embeddings from an ONNX file, with the model's own tokenizer."""

    def __init__(
        self,
        model_path: Path,
        onnx_path: Path,
        identity: str,
        batch_size: int = 32,
        threads: int = 0,
        batch_invariant: bool = True,
    ) -> None:
        """`batch_invariant=False` for a dynamically quantized (int8) file: one activation
        scale per forward pass makes a text's vector move with its batch-mates (cosine 0.995
        between a sentence embedded alone and beside another, all-MiniLM-L6-v2)."""
        from tokenizers import Tokenizer

        layout = SentenceModelLayout(model_path)
        self.path = model_path
        self.onnx_path = onnx_path
        self.identity = identity
        self.batch_size = batch_size
        self.batch_invariant = batch_invariant
        self.pooling = layout.pooling
        self.normalize = layout.normalize
        self.max_tokens = layout.max_tokens
        self.tokenizer = Tokenizer.from_file(str(layout.tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # What the model reads: [CLS] text [SEP], cut at its limit; batches are padded here.
        self._truncating = Tokenizer.from_file(str(layout.tokenizer_file))
        self._truncating.no_padding()
        self._truncating.enable_truncation(self.max_tokens)
        self._pad = self._pad_id()
        # The cores this process may use (taskset, a container's cpuset), not the machine's.
        threads = threads or len(os.sched_getaffinity(0)) or 1
        # ONNX Runtime's pool threads spin for a while after each run. Between batches of a
        # bulk embedding that saves ~5% (A/B, 700 abstracts). After a question's embedding
        # it takes the cores the HNSW and BM25 searches need next (at 100k chunks, dense p95
        # 25 -> 14 ms without it). So calls of one batch or less run on a session that
        # sleeps at once; holding the weights twice costs 66 MB (int8) of memory.
        self.session = self._session(onnx_path, threads, spinning=True)
        self._small_calls = self._session(onnx_path, threads, spinning=False)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.dimension = int(self.embed(["dimension"]).shape[1])

    @staticmethod
    def _session(onnx_path: Path, threads: int, spinning: bool) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        options.log_severity_level = 3
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def _pad_id(self) -> int:
        padding = self.tokenizer.padding
        if padding and "pad_id" in padding:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>"):
            found = self.tokenizer.token_to_id(token)
            if found is not None:
                return int(found)
        return 0

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dimension", 0)), dtype=np.float32)
        encoded = self.tokenize(texts)
        out: np.ndarray | None = None
        session = self._small_calls if len(texts) <= self.batch_size else self.session
        for part in batches_by_length([len(ids) for ids in encoded], self.batch_size):
            vectors = self.forward([encoded[i] for i in part], session)
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[part] = vectors
        assert out is not None
        return out

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """The token ids the model reads for each text: [CLS] text [SEP], cut at its limit."""
        return [e.ids for e in self._truncating.encode_batch(texts)]

    def forward(self, batch: list[list[int]], session: Any = None) -> np.ndarray:
        """One batch of `tokenize` output, padded to its longest, run on `session` (the
        bulk session by default)."""
        session = session or self.session
        ids = np.full((len(batch), max(len(row) for row in batch)), self._pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feeds)[0]
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if self.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for `text`, without the [CLS]/[SEP] it adds."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
