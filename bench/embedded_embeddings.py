"""What serving embeddings costs the bundled model's generation: the model loaded as Ghost loads
it, without and with `embedding=True` (mean pooling), in the same run, each in a fresh process.

Prints, per variant: the best of N prompt+16-token generations of one prompt (seconds) and the
process's resident memory after them (MB). llama.cpp keeps an output row per prompt token when
embeddings are on, so memory grows with the batch; generated text is compared to be the same.

    .venv/bin/python bench/embedded_embeddings.py [--repeat 3] [--words 360]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ghost.llm.embedded import bundled_model_file  # noqa: E402

CHILD = """
import json, sys, time
from llama_cpp import Llama
path, embedding, repeat, words = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
extra = {"embedding": True, "pooling_type": 1} if embedding else {}
model = Llama(model_path=path, n_ctx=2048, logits_all=False, verbose=False, n_threads=1, n_threads_batch=1, **extra)
prompt = "<|im_start|>user\\n" + " ".join(["fox"] * words) + "\\nSummarise.<|im_end|>\\n<|im_start|>assistant\\n"
times, text = [], ""
for _ in range(repeat):
    model.reset()
    started = time.perf_counter()
    text = model.create_completion(prompt, max_tokens=16, temperature=0)["choices"][0]["text"]
    times.append(time.perf_counter() - started)
status = open("/proc/self/status").read()
rss = int(status.split("VmRSS:")[1].split()[0]) // 1024
print(json.dumps({"best": min(times), "rss_mb": rss, "text": text,
                  "prompt_tokens": len(model.tokenize(prompt.encode()))}))
"""


def run(embedding: bool, repeat: int, words: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(bundled_model_file()), "1" if embedding else "0",
                          str(repeat), str(words)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--words", type=int, default=360)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    plain, embedding = run(False, args.repeat, args.words), run(True, args.repeat, args.words)
    print(f"prompt tokens: {plain['prompt_tokens']}")
    for name, result in (("generation only (baseline)", plain), ("embedding=True, mean pooling", embedding)):
        print(f"{name:30s} best {result['best']:.3f} s   rss {result['rss_mb']} MB")
    print(f"memory cost of embeddings: {embedding['rss_mb'] - plain['rss_mb']} MB; "
          f"same text generated: {plain['text'] == embedding['text']}")
    print(f"load average after: {os.getloadavg()[0]:.2f} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
