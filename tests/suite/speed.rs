//! The speed work keeps results: length-bucketed capture returns each prompt's vectors in prompt
//! order, generation that drops finished rows from its batch answers as each prompt alone, and
//! the device flag names what it can run on.

use crate::common;

use candle_core::{DType, Device};
use scalpel::checkpoint::ModelDir;
use scalpel::fixture::FixtureOptions;
use scalpel::model::{generate, parse_device, Decoder, GenerateOptions, HookPoint, Interventions, Sampling};
use scalpel::probe::{capture_set, CaptureSettings};
use scalpel::progress::Silent;
use scalpel::prompts::batch::length_buckets;
use scalpel::prompts::{PromptEncoder, PromptFormat};

#[test]
fn length_buckets_sort_by_length_and_cover_every_index_once() {
    let lengths = [5, 1, 9, 3, 3, 7, 2];
    let groups = length_buckets(&lengths, 3).unwrap();
    assert!(groups.iter().all(|g| !g.is_empty() && g.len() <= 3));
    let flat: Vec<usize> = groups.concat();
    let mut seen = flat.clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
    assert!(flat.windows(2).all(|w| lengths[w[0]] <= lengths[w[1]]), "sorted by length: {flat:?}");
    assert_eq!(flat[2..4], [3, 4], "equal lengths keep their order");
    assert!(length_buckets(&lengths, 0).is_err());
}

#[test]
fn bucketed_capture_keeps_prompt_order() {
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelDir::open(&common::fixture(tmp.path(), "m", "llama", &FixtureOptions::default())).unwrap();
    let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
    let prompts: Vec<String> =
        ["a much longer prompt than the others, with many words in it", "hi", "medium prompt here", "ok"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let capture = |batch: usize| {
        let settings = CaptureSettings {
            streams: vec![HookPoint::ResidPost],
            layers: vec![1],
            from_end: vec![1],
            batch,
            keep: true,
        };
        let stats = capture_set(&decoder, &encoder, &prompts, &settings, &Interventions::none(), &Silent).unwrap();
        stats.kept[&(HookPoint::ResidPost, 1)].clone()
    };
    let (one_by_one, bucketed) = (capture(1), capture(2));
    assert_eq!(one_by_one.len(), prompts.len());
    for (i, (a, b)) in one_by_one.iter().zip(&bucketed).enumerate() {
        let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "prompt {i}: bucketed capture differs by {diff}");
    }
    assert_ne!(one_by_one[0], one_by_one[1], "the prompts give different vectors");
}

#[test]
fn generation_dropping_finished_rows_answers_as_each_prompt_alone() {
    let tmp = tempfile::tempdir().unwrap();
    for family in ["llama", "qwen2"] {
        let model = ModelDir::open(&common::fixture(tmp.path(), family, family, &FixtureOptions::default())).unwrap();
        let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
        let prompts: Vec<Vec<u32>> = vec![vec![5, 9, 14, 3, 22, 8, 1], vec![7, 2], vec![11, 4, 30, 6], vec![19]];
        let options = GenerateOptions { max_tokens: 6, sampling: Sampling::default(), stop_ids: vec![] };
        let iv = Interventions::none();
        // Row 1 stops after its second token, row 2 after its fourth: they leave the batch early.
        let stop_after = [usize::MAX, 2, 4, usize::MAX];
        let run = |rows: &[usize]| {
            let batch: Vec<Vec<u32>> = rows.iter().map(|&r| prompts[r].clone()).collect();
            let mut counts = vec![0; rows.len()];
            generate(&decoder, &batch, 0, &options, &iv, &mut |row, _| {
                counts[row] += 1;
                counts[row] >= stop_after[rows[row]]
            })
            .unwrap()
        };
        let batched = run(&[0, 1, 2, 3]);
        for (r, got) in batched.iter().enumerate() {
            let alone = run(&[r]).remove(0);
            assert_eq!(got.ids, alone.ids, "{family}: row {r}");
            assert_eq!(got.stopped, alone.stopped, "{family}: row {r}");
            let diff =
                got.first_logits.iter().zip(&alone.first_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "{family}: row {r} first logits differ by {diff}");
        }
        assert_eq!(batched[1].ids.len(), 2);
        assert!(batched[1].stopped && !batched[0].stopped);
        assert_eq!(batched[0].ids.len(), 6);
    }
}

#[test]
fn device_flag_names_cpu_and_explains_missing_backends() {
    assert!(parse_device("cpu").unwrap().is_cpu());
    assert!(parse_device("auto").is_ok());
    let unknown = parse_device("tpu").unwrap_err().to_string();
    assert!(unknown.contains("tpu") && unknown.contains("cuda"), "{unknown}");
    assert!(parse_device("cuda:x").is_err());
    if !cfg!(feature = "cuda") {
        let missing = parse_device("cuda").unwrap_err().to_string();
        assert!(missing.contains("--features cuda"), "{missing}");
    }
    if !cfg!(feature = "metal") {
        let missing = parse_device("metal").unwrap_err().to_string();
        assert!(missing.contains("--features metal"), "{missing}");
    }
}
