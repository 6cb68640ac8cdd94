//! Activation-capture throughput: batches of 16 prompts of ~64 tokens through the whole model,
//! capturing resid_pre/mid/post at the last position of every layer (what `probe` does).
//! Prompts are length-bucketed as `probe` batches them, and each batch's shared prefix (the chat
//! template's system prompt and user header) runs once, as `probe` does (`model::prefill`);
//! `--file-order` batches them in file order instead (what `scripts/compare_transformers.py`
//! does), `--no-shared-prefix` runs every row whole (the work transformers does).
//!
//! The first batch runs once untimed before the clock starts (kernel loading on a GPU, first-touch
//! of buffers), and the time it took is printed apart.
//!
//! `cargo run --release --example bench_forward -- [MODEL_DIR] [BATCHES] [--file-order] [--no-shared-prefix] [--dtype D] [--device D]`

use scalpel::checkpoint::ModelDir;
use scalpel::model::{
    parse_device, parse_dtype, prefill, shares_prefix, CaptureSpec, Decoder, ForwardRequest, HookPoint, Interventions,
    LogitsMode,
};
use scalpel::prompts::batch::length_buckets;
use scalpel::prompts::{shared_prefix_len, Batch, PromptEncoder, PromptFormat, PromptSet};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let (mut file_order, mut shared_prefix, mut dtype, mut device) =
        (false, true, "f32".to_string(), "cpu".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--file-order" => file_order = true,
            "--no-shared-prefix" => shared_prefix = false,
            "--dtype" => dtype = args.next().unwrap_or_default(),
            "--device" => device = args.next().unwrap_or_default(),
            _ => positional.push(a),
        }
    }
    let dir = positional.first().cloned().unwrap_or_else(|| "models/smollm2-135m-instruct".into());
    let batches: usize = positional.get(1).map(|b| b.parse()).transpose()?.unwrap_or(8);
    let model = ModelDir::open(std::path::Path::new(&dir))?;
    let loading = Instant::now();
    let decoder = Decoder::load(&model, &parse_device(&device)?, parse_dtype(&dtype)?)?;
    let load_secs = loading.elapsed().as_secs_f64();
    // `prefill` runs a batch whole where splitting it does not pay (a GPU in 16 bits).
    let shared_prefix = shared_prefix && shares_prefix(&decoder);
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None })?;
    // ~64-token prompts: two held-out instructions joined, through the chat template.
    let set = PromptSet::load("builtin:harmless_train", None)?.prompts;
    let joined: Vec<String> = set.chunks(2).map(|c| c.join(" And also: ")).collect();
    // The same prompts as compare_transformers.py: batch b is prompts [16b, 16b + 16) mod n.
    let prompts: Vec<String> =
        (0..batches).flat_map(|b| joined.iter().cycle().skip((b * 16) % joined.len()).take(16).cloned()).collect();
    let encoded = prompts.iter().map(|p| encoder.encode(p)).collect::<scalpel::Result<Vec<_>>>()?;
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let groups = if file_order {
        (0..prompts.len()).collect::<Vec<_>>().chunks(16).map(<[usize]>::to_vec).collect()
    } else {
        length_buckets(&lengths, 16)?
    };
    let spec = CaptureSpec {
        points: HookPoint::STREAMS.to_vec(),
        layers: (0..model.spec.num_layers).collect(),
        from_end: vec![1],
        routing: true,
    };
    let iv = Interventions::none();
    let req = ForwardRequest { capture: Some(&spec), interventions: &iv, logits: LogitsMode::None };
    // One batch: the tokens it computes. Its captures are read back to the host, as `probe` does.
    let run = |group: &[usize]| -> anyhow::Result<usize> {
        let rows: Vec<Vec<u32>> = group.iter().map(|&i| encoded[i].clone()).collect();
        let batch = Batch::from_sequences(&rows, encoder.pad_id())?;
        let (computed, captures) = if shared_prefix {
            let shared = shared_prefix_len(&rows, 1);
            let out = prefill(&decoder, &rows, encoder.pad_id(), &req, 1)?;
            (shared + batch.len() * (batch.width() - shared), out.output.captures)
        } else {
            (batch.len() * batch.width(), decoder.forward(&batch.ids, &batch.mask, None, &req)?.captures)
        };
        for value in captures.values.values() {
            value.flatten_all()?.to_vec1::<f32>()?;
        }
        Ok(computed)
    };
    let warming = Instant::now();
    if let Some(first) = groups.first() {
        run(first)?;
    }
    let warm_secs = warming.elapsed().as_secs_f64();
    let mut tokens = 0usize;
    let started = Instant::now();
    for group in &groups {
        tokens += run(group)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let real: usize = lengths.iter().sum();
    println!(
        "scalpel capture ({dtype}, {device}, {}{}): {batches} batches of 16 ({:.0} tokens/prompt avg): {:.1} real (non-pad) tokens/s, \
         {:.1} tokens/s computed, {:.2} s (load {load_secs:.2} s, first batch {warm_secs:.2} s)",
        if file_order { "file order" } else { "length-bucketed" },
        if shared_prefix { ", shared prefix once" } else { "" },
        real as f64 / prompts.len() as f64,
        real as f64 / secs,
        tokens as f64 / secs,
        secs
    );
    Ok(())
}
