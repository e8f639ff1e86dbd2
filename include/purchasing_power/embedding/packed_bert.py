"""The packed BERT forward: an inference-only BERT encoder over unpadded, concatenated tokens.

Used for BERT encoders (this project's default model); other architectures go through the
transformers module on padded batches (:mod:`purchasing_power.embedding.encoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch


class PackedBert:
    """Inference-only BERT encoder over the transformers model's own weights, on *packed* tokens.

    The texts of a wave are laid end to end, without padding, in one ``[tokens, hidden]``
    matrix. Token-wise work (embeddings, the Q/K/V, output and feed-forward matmuls, LayerNorm,
    GELU) runs over fixed-size chunks of ``chunk`` rows; attention and pooling run per group of
    ``group(n)`` texts of the same length ``n`` (``[group, heads, n, head_dim]``, no mask: every
    row is real), the last group of a length filled up with zero dummies. Every kernel therefore
    sees shapes that depend on the batch settings and the text's own length only, and no FLOP
    is spent on padding except the tail of the last chunk of a wave.

    Same arithmetic as ``BertModel`` (post-LayerNorm blocks, exact GELU, SDPA attention);
    word + token-type embeddings are pre-summed, Q/K/V fused into one matmul and weights
    pre-transposed for ``addmm``. The matmuls and attention run in the chosen precision
    (float16 on CUDA, bfloat16 on CPUs with native bf16 matmuls); LayerNorm, residuals and
    pooling stay float32.
    """

    @staticmethod
    def supports(config: Any) -> bool:
        c = config
        return (
            getattr(c, "model_type", "") == "bert"
            and getattr(c, "position_embedding_type", "absolute") == "absolute"
            and getattr(c, "hidden_act", "") == "gelu"
            and not getattr(c, "is_decoder", False)
        )

    @staticmethod
    def weight_names(config: Any) -> list[str]:
        """The ``BertModel`` state-dict entries the packed forward reads."""
        emb = ("word_embeddings.weight", "token_type_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
        names = [f"embeddings.{n}" for n in emb]
        blocks = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
        for i in range(int(config.num_hidden_layers)):
            names += [f"encoder.layer.{i}.{b}.{p}" for b in blocks for p in ("weight", "bias")]
        return names

    def __init__(self, config: Any, sd: dict[str, torch.Tensor], device: str, precision: str = "float32"):
        """``sd``: the ``BertModel`` state dict (at least :meth:`weight_names`), on ``device``;
        ``precision``: the dtype of the matmuls and attention (see :func:`resolve_precision`)."""
        import torch

        c = config
        cd = getattr(torch, precision)
        self.cdtype = cd
        self.heads = int(c.num_attention_heads)
        self.eps = float(c.layer_norm_eps)
        self.hidden = int(c.hidden_size)
        self.word_type = (sd["embeddings.word_embeddings.weight"] + sd["embeddings.token_type_embeddings.weight"][0]).contiguous()
        self.pos = sd["embeddings.position_embeddings.weight"]
        self.emb_ln = (sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(c.num_hidden_layers)):
            g = lambda n, i=i: sd[f"encoder.layer.{i}.{n}"]  # noqa: E731
            w = lambda n, g=g: g(n).t().contiguous().to(cd)  # noqa: E731
            q, k, v = (g(f"attention.self.{n}.weight") for n in ("query", "key", "value"))
            self.layers.append(
                (
                    torch.cat([q, k, v], 0).t().contiguous().to(cd),
                    torch.cat([g(f"attention.self.{n}.bias") for n in ("query", "key", "value")]).to(cd),
                    w("attention.output.dense.weight"),
                    g("attention.output.dense.bias").to(cd),
                    (g("attention.output.LayerNorm.weight"), g("attention.output.LayerNorm.bias")),
                    w("intermediate.dense.weight"),
                    g("intermediate.dense.bias").to(cd),
                    w("output.dense.weight"),
                    g("output.dense.bias").to(cd),
                    (g("output.LayerNorm.weight"), g("output.LayerNorm.bias")),
                )
            )

    def hidden_states(self, ids: torch.Tensor, pos: torch.Tensor, groups: Sequence[tuple[int, int, int, int]], chunk: int) -> torch.Tensor:
        """Last hidden states ``[M, hidden]`` (float32) of packed tokens ``ids``/``pos`` (``M`` a
        multiple of ``chunk``); ``groups`` = (first row, length n, texts g, group size G)."""
        import torch
        import torch.nn.functional as F

        M, d, H, cd, eps = ids.shape[0], self.hidden, self.heads, self.cdtype, self.eps
        chunks = [slice(c, c + chunk) for c in range(0, M, chunk)]
        x = torch.empty(M, d, dtype=torch.float32, device=ids.device)
        for s in chunks:
            x[s] = F.layer_norm(self.word_type[ids[s]] + self.pos[pos[s]], (d,), *self.emb_ln, eps)
        qkv = torch.empty(M, 3 * d, dtype=cd, device=ids.device)
        att = torch.empty(M, d, dtype=cd, device=ids.device)
        # per-chunk scratch, reused (fresh multi-MB allocations cost page faults on CPU)
        proj = torch.empty(chunk, d, dtype=cd, device=ids.device)
        inter = torch.empty(chunk, self.layers[0][5].shape[1], dtype=cd, device=ids.device)
        for wqkv, bqkv, wo, bo, ln1, wi, bi, wout, bout, ln2 in self.layers:
            for s in chunks:
                torch.addmm(bqkv, x[s].to(cd), wqkv, out=qkv[s])
            for r0, n, g, G in groups:
                # Attention is computed per (text, head) independently: a text's result does not
                # depend on how many texts share its group, so no dummy rows are needed here.
                blk = qkv[r0 : r0 + g * n].view(g, n, 3, H, d // H)
                q, k, v = blk.permute(2, 0, 3, 1, 4).unbind(0)
                a = F.scaled_dot_product_attention(q, k, v)  # [g, H, n, D]; no mask: no padding
                att[r0 : r0 + g * n].view(g, n, H, d // H).copy_(a.transpose(1, 2))
            for s in chunks:
                torch.addmm(bo, att[s], wo, out=proj)
                h1 = F.layer_norm(proj.float() + x[s], (d,), *ln1, eps)
                torch.addmm(bi, h1.to(cd), wi, out=inter)
                torch.ops.aten.gelu_(inter)
                torch.addmm(bout, inter, wout, out=proj)
                x[s] = F.layer_norm(proj.float() + h1, (d,), *ln2, eps)
        return x

    def pool(self, x: torch.Tensor, groups: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
        """Mean over each text's rows, L2-normalised: ``[texts, hidden]`` in group order."""
        import torch
        import torch.nn.functional as F

        d = self.hidden
        out = []
        for r0, n, g, G in groups:
            blk = x[r0 : r0 + g * n].view(g, n, d)
            out.append(F.normalize(blk.sum(dim=1) / n, p=2, dim=1))
        return torch.cat(out)


def bert_weights(folder: Path, config: Any) -> dict[str, torch.Tensor] | None:
    """The packed forward's tensors (float32, ``BertModel`` names; a ``bert.`` prefix, as in
    task-head checkpoints, is dropped) read from ``model.safetensors`` or ``pytorch_model.bin``;
    ``None`` when the checkpoint lacks one of them."""
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        raw = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        return None
    sd = {k.removeprefix("bert."): v for k, v in raw.items()}
    names = PackedBert.weight_names(config)
    if any(n not in sd for n in names):
        return None
    return {n: sd[n].float() if sd[n].is_floating_point() else sd[n] for n in names}
