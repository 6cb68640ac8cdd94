#!/usr/bin/env python3
"""Check a `scalpel export --type same --source-gguf SRC` result against its source.

  scripts/gguf_same.py compare SRC.gguf OUT.gguf
      Every tensor of OUT is compared with SRC's by name: type, shape and bytes. Prints the
      tensors whose bytes differ (they must be exactly the edited ones) and exits 1 if any
      tensor that differs is not a writer an edit touches (token_embd, attn_output, ffn_down,
      output) or a tensor is missing; then lists the metadata keys that changed.

  scripts/gguf_same.py requant OUT.gguf EDITED_DIR TYPE NEW.gguf --source SRC.gguf
      Writes NEW.gguf: OUT.gguf with every tensor that differs from SRC (the edited ones)
      re-encoded as TYPE (q8_0, f16, bf16, f32) from the edited folder's values, all else
      copied. It measures the other requantization rule (edited tensors to one fixed type
      instead of their source type) without changing the exporter.

Needs gguf, numpy, safetensors, torch (for bf16 safetensors).
"""
import argparse
import re
import sys

import numpy as np

EDITABLE = re.compile(r"^(token_embd|output|blk\.\d+\.(attn_output|ffn_down))\.weight$")


def tensors(reader):
    return {t.name: t for t in reader.tensors}


def differing(src, out):
    import gguf

    a, b = tensors(gguf.GGUFReader(src)), tensors(gguf.GGUFReader(out))
    same, diff, problems = [], [], []
    for name, t in b.items():
        s = a.get(name)
        if s is None:
            problems.append(f"{name}: not in the source")
            continue
        if list(s.shape) != list(t.shape):
            problems.append(f"{name}: shape {list(t.shape)} vs source {list(s.shape)}")
            continue
        if s.tensor_type == t.tensor_type and bytes(s.data.tobytes()) == bytes(t.data.tobytes()):
            same.append(name)
        else:
            diff.append((name, s.tensor_type.name, t.tensor_type.name))
    for name in a:
        if name not in b:
            problems.append(f"{name}: missing from the output")
    return same, diff, problems


def metadata(path):
    import gguf

    r = gguf.GGUFReader(path)
    out = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        try:
            v = f.contents()
        except Exception:  # noqa: BLE001 - an unreadable field is compared by its raw parts
            v = [p.tobytes() for p in f.parts]
        out[f.name] = v
    return out


def cmd_compare(args):
    same, diff, problems = differing(args.src, args.out)
    print(f"{len(same)} tensors byte-identical to the source, {len(diff)} differ")
    for name, st, ot in diff:
        print(f"  {name}: source {st} -> {ot}")
    bad = [n for n, _, _ in diff if not EDITABLE.match(n)]
    for p in problems + [f"{n}: differs but no edit writes it" for n in bad]:
        print("PROBLEM", p)
    ms, mo = metadata(args.src), metadata(args.out)
    changed = sorted(k for k in ms.keys() & mo.keys() if ms[k] != mo[k])
    only_src = sorted(ms.keys() - mo.keys())
    only_out = sorted(mo.keys() - ms.keys())
    print(f"metadata: {len(ms.keys() & mo.keys()) - len(changed)} keys equal, changed {changed}, "
          f"only in source {only_src}, only in output {only_out}")
    sys.exit(1 if problems or bad else 0)


def hf_name(gg):
    if gg == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gg == "output.weight":
        return "lm_head.weight"
    m = re.match(r"blk\.(\d+)\.(attn_output|ffn_down)\.weight$", gg)
    if not m:
        sys.exit(f"no folder name for {gg}")
    return f"model.layers.{m[1]}." + {"attn_output": "self_attn.o_proj", "ffn_down": "mlp.down_proj"}[m[2]] + ".weight"


def folder_tensor(folder, name):
    import glob
    import os

    from safetensors import safe_open

    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(f, framework="pt") as s:
            if name in s.keys():
                return s.get_tensor(name).float().numpy()
    sys.exit(f"{name} not in {folder}")


def cmd_requant(args):
    import gguf

    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16, "f32": gguf.GGMLQuantizationType.F32}[args.type]
    _, diff, problems = differing(args.source, args.out)
    if problems:
        sys.exit("\n".join(problems))
    edited = {n for n, _, _ in diff}
    reader = gguf.GGUFReader(args.out)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(args.new, arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vt = field.types[0]
        sub = field.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vt, sub_type=sub)
    data = []
    for t in reader.tensors:
        if t.name in edited:
            w = folder_tensor(args.folder, hf_name(t.name)).astype(np.float32)
            if qtype == gguf.GGMLQuantizationType.F32:
                q = w
            elif qtype == gguf.GGMLQuantizationType.F16:
                q = w.astype(np.float16)
            else:
                q = gguf.quants.quantize(w, qtype)
            writer.add_tensor_info(t.name, q.shape, q.dtype, q.nbytes, qtype)
            data.append(q)
        else:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
            data.append(t.data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for d in data:
        writer.write_tensor_data(d)
    writer.close()
    print(f"{args.new}: {len(edited)} edited tensors as {args.type}, {len(data) - len(edited)} copied")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("src")
    c.add_argument("out")
    r = sub.add_parser("requant")
    r.add_argument("out")
    r.add_argument("folder")
    r.add_argument("type", choices=["q8_0", "f16", "bf16", "f32"])
    r.add_argument("new")
    r.add_argument("--source", required=True, help="the source GGUF of the --type same export")
    args = ap.parse_args()
    {"compare": cmd_compare, "requant": cmd_requant}[args.cmd](args)


if __name__ == "__main__":
    main()
