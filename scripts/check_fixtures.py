#!/usr/bin/env python3
"""Check that every `scalpel fixture` is a model folder transformers opens and runs as scalpel does.

Usage:
  scripts/check_fixtures.py --scalpel BIN --work DIR [--tokens N] [--prompt TEXT] [--tol T]
                            [--family NAME ...] [--fixture-args="FLAGS"]

For every family the binary can make a fixture of (read from `scalpel fixture --help`), or
those named by --family:
  * `scalpel fixture FAMILY` (with --fixture-args, e.g. "--untied --biases") into DIR/FAMILY;
  * `scalpel generate --raw --no-newline --json` (greedy, f32, CPU): the prompt's token ids, N
    greedy tokens and the first step's logits; the same with the chat template, for its ids;
  * transformers (AutoTokenizer, AutoModelForCausalLM in float32) on the folder: the raw prompt
    and the chat template tokenized there, the first step's logits, N greedy tokens from
    scalpel's prompt ids (model.generate, stopping at generation_config.json's EOS ids), and the
    logits of every step with scalpel's tokens fed in.
A family passes when the folder loads, both tokenizations give scalpel's ids, the first-step
logits agree within --tol, and every token scalpel chose is within --tol of the top logit that
transformers computes for the same prefix. The last is what greedy agreement means on random
weights: where two tokens' logits are closer than the two runtimes' rounding, either runtime may
pick either one, so a free-running divergence at such a tie is reported (with the gap) but is not
a failure. Families that transformers does not implement (or only as remote code, e.g. Qwen-1
`qwen`) are reported as such. Prints a markdown table; exits 1 if a family transformers
implements fails.

Needs torch and transformers.
"""
import argparse
import json
import os
import re
import subprocess
import sys


def families_of(scalpel):
    """The families named in `scalpel fixture --help` (the binary's own list)."""
    text = " ".join(subprocess.run([scalpel, "fixture", "--help"], check=True, capture_output=True,
                                   text=True).stdout.split())
    m = re.search(r"model_type: ([a-z0-9_]+(?:, [a-z0-9_]+)*)", text)
    if not m:
        sys.exit("could not read the family list from `scalpel fixture --help`")
    return m.group(1).split(", ")


def first_line(e):
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if not isinstance(e, str):
        text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 120 else text[:117] + "..."


def scalpel_generate(scalpel, model, prompt, tokens, raw):
    cmd = [scalpel, "--quiet", "generate", model, "--prompt", prompt, "--max-tokens", str(tokens),
           "--temperature", "0", "--dtype", "f32", "--device", "cpu", "--json"]
    if raw:
        cmd += ["--raw", "--no-newline"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or f"exit status {out.returncode}")
    return json.loads(out.stdout)


def check(family, args, implemented):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    row = {"family": family}
    model_dir = os.path.join(args.work, family)
    if not os.path.isdir(model_dir):
        try:
            subprocess.run([args.scalpel, "--quiet", "fixture", family, "--out", model_dir, *args.fixture_args.split()],
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            row["error"] = "scalpel fixture: " + first_line(e.stderr or e)
            return row
    model_type = json.load(open(os.path.join(model_dir, "config.json")))["model_type"]
    if model_type not in implemented:
        row["na"] = f"transformers {args.hf_version} has no `{model_type}` model type"
        return row
    try:
        mine = scalpel_generate(args.scalpel, model_dir, args.prompt, args.tokens, raw=True)
        mine_chat = scalpel_generate(args.scalpel, model_dir, args.prompt, 1, raw=False)
    except RuntimeError as e:
        row["error"] = "scalpel: " + first_line(e)
        return row
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    except Exception as e:  # noqa: BLE001 (any failure to load is the finding)
        row["loads"] = first_line(e)
        return row
    row["loads"] = "yes"
    row["raw_ids"] = tok(args.prompt).input_ids == mine["prompt_ids"]
    try:
        text = tok.apply_chat_template([{"role": "user", "content": args.prompt}], tokenize=False,
                                       add_generation_prompt=True)
        row["chat_ids"] = tok(text, add_special_tokens=False).input_ids == mine_chat["prompt_ids"]
    except Exception as e:  # noqa: BLE001
        row["chat_ids"] = first_line(e)

    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    eos = [t for t in eos if t is not None]
    prompt, ids = mine["prompt_ids"], mine["ids"]
    with torch.no_grad():
        x = torch.tensor([prompt + ids])
        # Position p's logits predict token p + 1: the steps scalpel took, and one after its last.
        steps = model(x).logits[0, len(prompt) - 1:].double()
        first = torch.tensor(mine["first_logits"], dtype=torch.float64)
        row["logit_diff"] = float((steps[0] - first).abs().max())
        p = torch.tensor([prompt])
        out = model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=args.tokens, do_sample=False,
                             eos_token_id=eos or None, pad_token_id=gen.pad_token_id or (eos or [0])[0])
    theirs = out[0, len(prompt):].tolist()

    # Scalpel's choice at each step: a token, or (after its last token, if it stopped) any EOS id.
    def choice_gap(k):
        """How far below transformers' top logit at step k scalpel's choice is."""
        row_logits = steps[k]
        chosen = ids[k] if k < len(ids) else None
        if chosen is None and not eos:
            return float("inf")  # scalpel stopped; transformers knows no EOS id to stop at
        value = row_logits[chosen] if chosen is not None else max(row_logits[t] for t in eos)
        return float(row_logits.max() - value)

    checked = len(ids) + (1 if mine["stopped"] else 0)
    row["worst_gap"] = max(choice_gap(k) for k in range(checked))
    mine_seq = ids + (["eos"] if mine["stopped"] else [])
    theirs_seq = [("eos" if t in eos else t) for t in theirs]
    if "eos" in theirs_seq:
        theirs_seq = theirs_seq[: theirs_seq.index("eos") + 1]
    k = next((i for i, (a, b) in enumerate(zip(mine_seq, theirs_seq)) if a != b), None)
    if k is None and len(mine_seq) != len(theirs_seq):
        k = min(len(mine_seq), len(theirs_seq))
    row["n"] = len(ids)
    if k is None:
        row["greedy"] = f"{len(ids)}/{len(ids)} equal" + (", then EOS" if mine["stopped"] else "")
    else:
        gap = choice_gap(k) if k < checked else float("nan")
        kind = "a tie" if gap <= args.tol else "not a tie"
        row["greedy"] = f"differ at token {k} ({kind}: logit gap {gap:.1e})"
    row["pass"] = (row["raw_ids"] is True and row["chat_ids"] is True and row["logit_diff"] <= args.tol
                   and row["worst_gap"] <= args.tol)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scalpel", required=True)
    ap.add_argument("--work", required=True, help="folder for the fixtures (DIR/FAMILY)")
    ap.add_argument("--tokens", type=int, default=10)
    ap.add_argument("--prompt", default="The weather in the city is what I want to know, and the")
    # Two f32 implementations of these tiny models, summing in different orders, agree to a few
    # 1e-6; the decoder oracles hold scalpel to candle within 1e-4.
    ap.add_argument("--tol", type=float, default=1e-4, help="logit tolerance (absolute)")
    ap.add_argument("--family", action="append", help="only these families (default: every one)")
    ap.add_argument("--fixture-args", default="", help="more `scalpel fixture` flags, one string")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    args.hf_version = transformers.__version__
    families = args.family or families_of(args.scalpel)
    rows = []
    for family in families:
        print(f"{family} ...", file=sys.stderr, flush=True)
        rows.append(check(family, args, CONFIG_MAPPING_NAMES))

    yn = lambda v: "yes" if v is True else ("no" if v is False else v)  # noqa: E731
    print(f"\ntransformers {args.hf_version}, torch {torch.__version__}; prompt {args.prompt!r} (raw), "
          f"{args.tokens} greedy tokens, f32, tolerance {args.tol:g}\n")
    print("| family | loads | raw / chat ids | first-step logits max abs diff | greedy tokens | "
          "worst gap of scalpel's tokens | verdict |")
    print("|---|---|---|---|---|---|---|")
    failed = []
    for r in rows:
        f = r["family"]
        if "na" in r:
            print(f"| {f} | {r['na']} | | | | | n/a |")
        elif "error" in r:
            print(f"| {f} | {r['error']} | | | | | FAIL |")
            failed.append(f)
        elif r["loads"] != "yes":
            print(f"| {f} | no: {r['loads']} | | | | | FAIL |")
            failed.append(f)
        else:
            verdict = "ok" if r["pass"] else "FAIL"
            if not r["pass"]:
                failed.append(f)
            print(f"| {f} | yes | {yn(r['raw_ids'])} / {yn(r['chat_ids'])} | {r['logit_diff']:.1e} | {r['greedy']} | "
                  f"{r['worst_gap']:.1e} | {verdict} |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
