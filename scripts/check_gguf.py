#!/usr/bin/env python3
"""Measure GGUF files against the safetensors folder they should reproduce.

Usage:
  scripts/check_gguf.py --prompts FILE --pair LABEL GGUF REF_DIR [--pair ...]
                        [--max-tokens N] [--hf-gguf LABEL ...] [--json OUT.json]

For each pair, the prompt (chat template with the generation prompt, tokenized once by the
reference folder's tokenizer, so every runtime sees the same token ids) is run through
  * llama.cpp (llama-cpp-python) on GGUF: first-token logits, and a greedy answer;
  * transformers float32 on REF_DIR: the reference first-token logits;
  * with --hf-gguf LABEL, also transformers on the GGUF (gguf_file=, dequantized to float32).
KL(reference ‖ GGUF) of the first answer token is the softmax over the full vocabulary, in
float64, per prompt; the mean and max over the prompts are printed, with how many prompts keep
the reference's top token. Greedy answers of the reference folder are not generated here (the
shell script prints scalpel's own beside these).

Needs torch, transformers, gguf, numpy, and llama-cpp-python unless --no-llama is given
(then only the pairs named by --hf-gguf are measured, in transformers alone).
"""
import argparse
import json
import os
import sys

import numpy as np


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def kl(ref_logits, logits):
    lp, lq = log_softmax(ref_logits), log_softmax(logits)
    return float((np.exp(lp) * (lp - lq)).sum())


def chat_ids(tok, prompt):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False).input_ids


def reference_logits(ref_dir, ids_list):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ref_dir, torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids in ids_list:
            out.append(model(torch.tensor([ids])).logits[0, -1].numpy().astype(np.float64))
    del model
    return out


def hf_gguf_run(gguf, ids_list, max_tokens, stop_ids):
    """transformers on the GGUF (dequantized to float32): first-token logits and, with
    max_tokens > 0, greedy answers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf)), gguf_file=os.path.basename(gguf), torch_dtype=torch.float32
    ).eval()
    logits, answers = [], []
    with torch.no_grad():
        for ids in ids_list:
            x = torch.tensor([ids])
            logits.append(model(x).logits[0, -1].numpy().astype(np.float64))
            if max_tokens > 0:
                g = model.generate(x, max_new_tokens=max_tokens, do_sample=False, eos_token_id=stop_ids,
                                   pad_token_id=stop_ids[0])
                answers.append(g[0, len(ids):].tolist())
    del model
    return logits, answers


def llama_run(gguf, ids_list, max_tokens, threads):
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=2048, logits_all=True, n_threads=threads, verbose=False, seed=0)
    eos = {llm.token_eos()}
    # Qwen's chat turns end with <|im_end|>, which is not always the file's EOS token.
    for piece in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        t = llm.tokenize(piece.encode(), add_bos=False, special=True)
        if len(t) == 1:
            eos.add(t[0])
    logits, answers = [], []
    for ids in ids_list:
        llm.reset()
        llm.eval(ids)
        logits.append(np.array(llm.scores[len(ids) - 1], dtype=np.float64))
        out = []
        for _ in range(max_tokens):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if t in eos:
                break
            out.append(t)
            llm.eval([t])
        answers.append(llm.detokenize(out).decode("utf-8", errors="replace"))
    n_vocab = llm.n_vocab()
    del llm
    return logits, answers, n_vocab


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True, help="one prompt a line")
    ap.add_argument("--pair", nargs=3, action="append", metavar=("LABEL", "GGUF", "REF_DIR"), required=True)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--hf-gguf", action="append", default=[], metavar="LABEL",
                    help="also load this pair's GGUF in transformers (gguf_file=)")
    ap.add_argument("--hf-generate", action="store_true", help="and generate greedy answers there too")
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp (transformers gguf_file= only)")
    # One thread by default: on a machine another job keeps busy, two ggml threads on two cores
    # stalled each other at their barriers (over 5 min for one file vs 2.5 min with one thread).
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "1")))
    ap.add_argument("--json", help="write every logit statistic and answer here")
    ap.add_argument("--scalpel", help="JSON Lines {prompt, answer}: scalpel's answers, printed beside the GGUFs'")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    prompts = [p for p in open(args.prompts, encoding="utf-8").read().splitlines() if p.strip()]
    refs = {}
    results = {"prompts": prompts, "pairs": {}}
    for label, gguf, ref_dir in args.pair:
        if ref_dir not in refs:
            tok = AutoTokenizer.from_pretrained(ref_dir)
            ids_list = [chat_ids(tok, p) for p in prompts]
            print(f"reference {ref_dir}: transformers float32", file=sys.stderr)
            stops = [t for t in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(t, int)]
            refs[ref_dir] = (ids_list, reference_logits(ref_dir, ids_list), tok, stops)
        ids_list, ref, tok, stops = refs[ref_dir]
        entry = {"gguf": gguf, "reference": ref_dir, "bytes": os.path.getsize(gguf)}
        line = f"{label:24s} {entry['bytes'] / 1e6:8.1f} MB"
        if not args.no_llama:
            print(f"{label}: llama.cpp {gguf}", file=sys.stderr)
            logits, answers, n_vocab = llama_run(gguf, ids_list, args.max_tokens, args.threads)
            if n_vocab != len(ref[0]):
                sys.exit(f"{label}: llama.cpp vocabulary {n_vocab} != the reference's {len(ref[0])}")
            kls = [kl(r, q) for r, q in zip(ref, logits)]
            top = sum(int(np.argmax(r) == np.argmax(q)) for r, q in zip(ref, logits))
            entry.update(
                llama_kl=kls,
                llama_kl_mean=float(np.mean(kls)),
                llama_kl_max=float(np.max(kls)),
                llama_top1_agree=top,
                answers=answers,
            )
            line += f"  llama.cpp KL mean {entry['llama_kl_mean']:.2e} max {entry['llama_kl_max']:.2e} top-1 {top}/{len(prompts)}"
        elif label not in args.hf_gguf:
            continue
        if label in args.hf_gguf:
            print(f"{label}: transformers gguf_file= {gguf}", file=sys.stderr)
            hf, hf_answers = hf_gguf_run(gguf, ids_list, args.max_tokens if args.hf_generate else 0, stops)
            if hf_answers:
                entry["hf_answers"] = [tok.decode(a, skip_special_tokens=True) for a in hf_answers]
            hk = [kl(r, q) for r, q in zip(ref, hf)]
            entry.update(
                hf_kl=hk,
                hf_kl_mean=float(np.mean(hk)),
                hf_kl_max=float(np.max(hk)),
                hf_top1_agree=sum(int(np.argmax(r) == np.argmax(q)) for r, q in zip(ref, hf)),
            )
        results["pairs"][label] = entry
        if "hf_kl_mean" in entry:
            line += f"  | transformers KL mean {entry['hf_kl_mean']:.2e} max {entry['hf_kl_max']:.2e} top-1 {entry['hf_top1_agree']}/{len(prompts)}"
        print(line, flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1, ensure_ascii=False)
    if args.scalpel:
        mine = [json.loads(line) for line in open(args.scalpel, encoding="utf-8") if line.strip()]
        theirs = {m["prompt"]: m["answer"] for m in mine}
        one = lambda t: " ".join(t.split())[:240]  # noqa: E731
        for i, p in enumerate(prompts):
            print(f"\n=== {p}")
            print(f"  scalpel (safetensors)  : {one(theirs.get(p, '(none)'))}")
            for label, e in results["pairs"].items():
                if "answers" in e:
                    print(f"  {label:22s} llama.cpp: {one(e['answers'][i])}")
                if "hf_answers" in e:
                    print(f"  {label:22s} transf.  : {one(e['hf_answers'][i])}")


if __name__ == "__main__":
    main()
