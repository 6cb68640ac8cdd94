//! Batching: a tiny word-level tokenizer built here, left padding, position ids, the additive
//! causal + padding + sliding-window mask with a KV-cache offset, and special tokens.

use candle_core::{DType, Device};
use scalpel::prompts::{
    attention_bias, chunks, encode_batch, encode_texts, load_tokenizer, position_ids, Batch, ChatTemplate,
    PromptEncoder, PromptFormat, SpecialTokens, MASK_BLOCKED,
};
use std::path::Path;
use tokenizers::Tokenizer;

const WORDS: &[&str] =
    &["<pad>", "<s>", "</s>", "<unk>", "hello", "world", "how", "are", "you", "today", "[INST]", "[/INST]"];

/// A word-level tokenizer: whitespace split, `<s>` `</s>` `<pad>` `[INST]` `[/INST]` as added
/// special tokens, and a post-processor that puts `<s>` in front when special tokens are added.
fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        WORDS.iter().enumerate().map(|(i, w)| (w.to_string(), serde_json::json!(i))).collect();
    let added: Vec<serde_json::Value> = [0usize, 1, 2, 10, 11]
        .iter()
        .map(|&i| {
            serde_json::json!({"id": i, "content": WORDS[i], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

fn tokenizer() -> Tokenizer {
    tokenizer_json().parse().unwrap()
}

fn id(word: &str) -> u32 {
    WORDS.iter().position(|w| *w == word).unwrap() as u32
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn encoding_adds_bos_only_when_asked() {
    let t = tokenizer();
    let with = encode_texts(&t, &strings(&["hello world"]), true).unwrap();
    assert_eq!(with, [vec![id("<s>"), id("hello"), id("world")]]);
    let without = encode_texts(&t, &strings(&["<s>hello world"]), false).unwrap();
    assert_eq!(without, [vec![id("<s>"), id("hello"), id("world")]]);
    let err = encode_texts(&t, &strings(&["hello", "   "]), false).unwrap_err().to_string();
    assert!(err.contains("no tokens"), "{err}");
}

#[test]
fn left_padding_positions_and_lengths() {
    let t = tokenizer();
    let pad = id("<pad>");
    let batch = encode_batch(&t, &strings(&["hello world", "how are you today"]), false, pad).unwrap();
    let (h, w) = (id("hello"), id("world"));
    assert_eq!(batch.ids, vec![vec![pad, pad, h, w], vec![id("how"), id("are"), id("you"), id("today")]]);
    assert_eq!(batch.mask, vec![vec![0, 0, 1, 1], vec![1, 1, 1, 1]]);
    assert_eq!(batch.positions, vec![vec![0, 0, 0, 1], vec![0, 1, 2, 3]]);
    assert_eq!(batch.lengths, [2, 4]);
    assert_eq!((batch.len(), batch.width()), (2, 4));
    // The last column is every row's last real token.
    assert!(batch.mask.iter().all(|row| row[row.len() - 1] == 1));
    // The same positions from the mask alone, and for a decode step after it.
    assert_eq!(position_ids(&batch.mask, 4).unwrap(), batch.positions);
    let extended: Vec<Vec<u8>> = batch.mask.iter().map(|r| [r.clone(), vec![1]].concat()).collect();
    let step: Vec<u32> = position_ids(&extended, 1).unwrap().into_iter().flatten().collect();
    assert_eq!(step, batch.next_positions(0));
    assert_eq!(batch.next_positions(2), [4, 6]);

    let device = Device::Cpu;
    let ids = batch.input_ids(&device).unwrap();
    assert_eq!((ids.dims(), ids.dtype()), (&[2usize, 4][..], DType::U32));
    assert_eq!(ids.to_vec2::<u32>().unwrap(), batch.ids);
    let mask: Vec<Vec<u32>> = batch.attention_mask(&device).unwrap().to_vec2().unwrap();
    assert_eq!(mask, vec![vec![0, 0, 1, 1], vec![1, 1, 1, 1]]);
    assert_eq!(batch.position_ids(&device).unwrap().to_vec2::<u32>().unwrap(), batch.positions);
}

#[test]
fn empty_sequences_and_ragged_masks_are_errors() {
    assert!(Batch::from_sequences(&[vec![1], vec![]], 0).unwrap_err().to_string().contains("sequence 1"));
    let ragged = vec![vec![1u8, 1], vec![1u8]];
    assert!(attention_bias(&ragged, 1, None, &Device::Cpu).is_err());
    assert!(attention_bias(&[vec![1u8, 1]], 3, None, &Device::Cpu).is_err());
    assert!(attention_bias(&[vec![1u8, 1]], 1, Some(0), &Device::Cpu).is_err());
    assert!(position_ids(&ragged, 1).is_err());
}

/// Allowed (true) entries of a mask tensor `[B, 1, Q, K]`, checking every value is 0 or blocked.
fn allowed(mask: &candle_core::Tensor) -> Vec<Vec<Vec<bool>>> {
    let values: Vec<Vec<Vec<f32>>> = mask.squeeze(1).unwrap().to_vec3().unwrap();
    values
        .iter()
        .map(|q| {
            q.iter()
                .map(|k| {
                    k.iter()
                        .map(|&v| {
                            assert!(v == 0.0 || v == MASK_BLOCKED, "unexpected mask value {v}");
                            v == 0.0
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// The expected pattern, from a different construction: each query's visible keys are the
/// contiguous range from max(first real key, query − window + 1) to the query itself.
fn expected(padding: &[usize], past: usize, new: usize, window: Option<usize>) -> Vec<Vec<Vec<bool>>> {
    padding
        .iter()
        .map(|&pads| {
            (0..new)
                .map(|q| {
                    let i = past + q;
                    let lo = window.map_or(pads, |w| pads.max((i + 1).saturating_sub(w)));
                    let visible: Vec<usize> = (lo..=i).collect();
                    (0..past + new).map(|j| visible.contains(&j)).collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn prefill_mask_blocks_padding_and_the_future() {
    let batch = left_pad_two();
    let mask = batch.attention_bias(None, &Device::Cpu).unwrap();
    assert_eq!(mask.dims(), &[2, 1, 4, 4]);
    assert_eq!(mask.dtype(), DType::F32);
    let got = allowed(&mask);
    let (o, x) = (true, false);
    // Row 0 has two pads: its pad queries see nothing, real queries see real keys up to themselves.
    assert_eq!(got[0], vec![vec![x, x, x, x], vec![x, x, x, x], vec![x, x, o, x], vec![x, x, o, o]]);
    assert_eq!(got[1], vec![vec![o, x, x, x], vec![o, o, x, x], vec![o, o, o, x], vec![o, o, o, o]]);
    assert_eq!(got, expected(&[2, 0], 0, 4, None));
    // A softmax over a fully blocked row stays finite.
    let probs = candle_nn::ops::softmax_last_dim(&mask).unwrap();
    let sums: Vec<f32> = probs.sum(3).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
}

fn left_pad_two() -> Batch {
    Batch::from_sequences(&[vec![4, 5], vec![6, 7, 8, 9]], 0).unwrap()
}

#[test]
fn sliding_window_keeps_only_recent_keys() {
    let batch = left_pad_two();
    let got = allowed(&batch.attention_bias(Some(2), &Device::Cpu).unwrap());
    let (o, x) = (true, false);
    assert_eq!(got[1], vec![vec![o, x, x, x], vec![o, o, x, x], vec![x, o, o, x], vec![x, x, o, o]]);
    assert_eq!(got, expected(&[2, 0], 0, 4, Some(2)));
    // A window wider than the sequence changes nothing.
    let wide = allowed(&batch.attention_bias(Some(10), &Device::Cpu).unwrap());
    assert_eq!(wide, allowed(&batch.attention_bias(None, &Device::Cpu).unwrap()));
}

#[test]
fn kv_cache_offset_uses_the_past_padding() {
    // Past: the prefill above (4 columns, row 0 padded twice); now 2 new tokens per row.
    let key_mask = vec![vec![0u8, 0, 1, 1, 1, 1], vec![1u8, 1, 1, 1, 1, 1]];
    let mask = attention_bias(&key_mask, 2, None, &Device::Cpu).unwrap();
    assert_eq!(mask.dims(), &[2, 1, 2, 6]);
    let got = allowed(&mask);
    let (o, x) = (true, false);
    assert_eq!(got[0], vec![vec![x, x, o, o, o, x], vec![x, x, o, o, o, o]]);
    assert_eq!(got, expected(&[2, 0], 4, 2, None));
    for window in [1, 2, 3, 5] {
        let got = allowed(&attention_bias(&key_mask, 2, Some(window), &Device::Cpu).unwrap());
        assert_eq!(got, expected(&[2, 0], 4, 2, Some(window)), "window {window}");
    }
    let positions = position_ids(&key_mask, 2).unwrap();
    assert_eq!(positions, vec![vec![2, 3], vec![4, 5]]);
}

#[test]
fn chunks_cover_every_item_once() {
    let items: Vec<usize> = (0..7).collect();
    let sizes: Vec<usize> = chunks(&items, 3).unwrap().map(<[usize]>::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(chunks(&items, 3).unwrap().flatten().copied().collect::<Vec<_>>(), items);
    assert!(chunks(&items, 0).is_err());
}

fn model_dir(config: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer_json()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

fn special(dir: &Path) -> SpecialTokens {
    SpecialTokens::from_model_dir(dir, &load_tokenizer(dir).unwrap()).unwrap()
}

#[test]
fn pad_id_comes_from_pad_token_else_eos_else_zero() {
    let d = model_dir(serde_json::json!({"pad_token": "<pad>", "eos_token": "</s>", "bos_token": {"content": "<s>"}}));
    let s = special(d.path());
    assert_eq!((s.pad_id, s.bos_id, s.eos_ids.clone()), (id("<pad>"), Some(id("<s>")), vec![id("</s>")]));
    let d = model_dir(serde_json::json!({"pad_token": null, "eos_token": {"content": "</s>"}}));
    assert_eq!(special(d.path()).pad_id, id("</s>"));
    let d = model_dir(serde_json::json!({}));
    assert_eq!(special(d.path()).pad_id, 0);
    std::fs::write(d.path().join("generation_config.json"), r#"{"eos_token_id": [2, 11]}"#).unwrap();
    assert_eq!(special(d.path()).eos_ids, [2, 11]);
}

#[test]
fn tokenizer_loading_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_tokenizer(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("not found"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": 1}").unwrap();
    let err = load_tokenizer(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("not a usable tokenizer"), "{err}");
}

#[test]
fn templated_prompts_get_one_bos_and_raw_prompts_get_the_tokenizer_one() {
    let d = model_dir(serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"
    }));
    let chat = PromptEncoder::from_model_dir(d.path(), PromptFormat::Chat { system: None }).unwrap();
    let ids = chat.encode("how are you").unwrap();
    assert_eq!(ids, [id("<s>"), id("[INST]"), id("how"), id("are"), id("you"), id("[/INST]")]);
    let raw = PromptEncoder::from_model_dir(d.path(), PromptFormat::Raw { trailing_newline: false }).unwrap();
    assert_eq!(raw.encode("how are you").unwrap(), [id("<s>"), id("how"), id("are"), id("you")]);
    let batch = chat.batch(&strings(&["hello", "how are you today"])).unwrap();
    assert_eq!(batch.lengths, [4, 7]);
    assert_eq!(batch.ids[0][..3], [id("<pad>"); 3]);
    assert_eq!(batch.ids[0][3..5], [id("<s>"), id("[INST]")]);
    // Built from parts: same result.
    let template = ChatTemplate::from_model_dir(d.path()).unwrap();
    let ids_of_special = special(d.path());
    let parts =
        PromptEncoder::new(tokenizer(), Some(template), PromptFormat::Chat { system: None }, ids_of_special).unwrap();
    assert_eq!(parts.batch(&strings(&["hello", "how are you today"])).unwrap(), batch);
    let err = PromptEncoder::new(tokenizer(), None, PromptFormat::Chat { system: None }, special(d.path()));
    assert!(err.is_err());
}

#[test]
fn shared_prefix_len_counts_common_leading_tokens_and_leaves_each_a_suffix() {
    use scalpel::prompts::shared_prefix_len;
    let rows = vec![vec![1, 2, 3, 4, 5], vec![1, 2, 3, 9], vec![1, 2, 3, 4]];
    assert_eq!(shared_prefix_len(&rows, 1), 3);
    assert_eq!(shared_prefix_len(&rows, 2), 2, "the shortest row keeps two tokens");
    assert_eq!(shared_prefix_len(&rows[..1], 1), 0, "one row shares nothing");
    assert_eq!(shared_prefix_len(&[vec![1, 2], vec![1, 2]], 1), 1, "identical rows keep their last token");
    assert_eq!(shared_prefix_len(&[vec![1, 2], vec![3, 2]], 1), 0);
}
