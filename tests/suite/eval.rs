//! The measurements of `scalpel eval` on fixtures: the KL divergence of a model against itself is
//! zero; against an edited checkpoint it is positive and equals the KL against the same edit done
//! at runtime; greedy answers are deterministic and do not depend on the batch size; the
//! cross-entropy of a text set is the mean next-token loss.

use crate::common;

use candle_core::{DType, Device};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::eval::{cross_entropy, first_token_kl, greedy_answers, refusals, Subject};
use scalpel::fixture::FixtureOptions;
use scalpel::model::{Decoder, ForwardRequest, Interventions, LogitsMode};
use scalpel::progress::Silent;
use scalpel::prompts::{encode_texts, PromptEncoder, PromptFormat};

fn prompts() -> Vec<String> {
    [
        "Write a short poem about the sea.",
        "How do I bake bread?",
        "Name three prime numbers",
        "Explain photosynthesis to a child, please.",
        "What is the capital of France?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn load(model: &ModelDir) -> (Decoder, PromptEncoder) {
    let decoder = Decoder::load(model, &Device::Cpu, DType::F32).unwrap();
    let encoder = PromptEncoder::from_model_dir(&model.root, PromptFormat::Chat { system: None }).unwrap();
    (decoder, encoder)
}

fn subject<'a>(name: &str, d: &'a Decoder, e: &'a PromptEncoder, iv: &'a Interventions) -> Subject<'a> {
    Subject { name: name.into(), decoder: d, encoder: e, interventions: iv }
}

#[test]
fn kl_is_zero_against_itself_and_equal_for_weight_and_runtime_edits() {
    let tmp = tempfile::tempdir().unwrap();
    // One family without post-norms (with output biases) and one with them (γ-aware edit).
    for (family, biases) in [("qwen2", false), ("llama", true), ("gemma2", false)] {
        let options = FixtureOptions { num_layers: 3, output_biases: biases, ..Default::default() };
        let src = ModelDir::open(&common::fixture(tmp.path(), family, family, &options)).unwrap();
        let dirs = common::directions(tmp.path(), src.spec.hidden_size, 3, 1, 1);
        let r = DirectionsFile::load(&dirs).unwrap().entries["resid_pre.1"].rows[0].clone();
        let edited = common::ablate_everything(&src, &dirs, &tmp.path().join(format!("{family}-edited")), false);
        let runtime = common::runtime_equivalent(&src, &r, src.head_is_tied());
        let none = Interventions::none();

        let (d0, e0) = load(&src);
        let (d1, e1) = load(&edited);
        let original = subject("original", &d0, &e0, &none);
        let ablated_at_runtime = subject("runtime", &d0, &e0, &runtime);
        let ablated_in_weights = subject("edited", &d1, &e1, &none);
        let prompts = prompts();

        let own = first_token_kl(&original, &original, &prompts, 2).unwrap();
        assert_eq!(own.per_prompt.len(), prompts.len());
        assert!(own.max.abs() < 1e-9, "{family}: KL of the model against itself is {}", own.max);

        let weights = first_token_kl(&original, &ablated_in_weights, &prompts, 2).unwrap();
        let at_runtime = first_token_kl(&original, &ablated_at_runtime, &prompts, 3).unwrap();
        assert!(weights.mean > 1e-6, "{family}: the edit does not change the distribution ({})", weights.mean);
        for (i, (w, rt)) in weights.per_prompt.iter().zip(&at_runtime.per_prompt).enumerate() {
            assert!((w - rt).abs() <= 1e-3 * w.max(1e-3), "{family} prompt {i}: KL edited {w} vs runtime {rt}");
        }
        let mean = weights.per_prompt.iter().sum::<f64>() / prompts.len() as f64;
        assert!((weights.mean - mean).abs() < 1e-12);
        assert_eq!(weights.max, weights.per_prompt.iter().copied().fold(0.0, f64::max));
    }
}

#[test]
fn greedy_answers_are_deterministic_and_independent_of_batch_size() {
    let tmp = tempfile::tempdir().unwrap();
    let src = ModelDir::open(&common::fixture(tmp.path(), "m", "llama", &FixtureOptions::default())).unwrap();
    let (decoder, encoder) = load(&src);
    let none = Interventions::none();
    let model = subject("m", &decoder, &encoder, &none);
    let prompts = prompts();
    let one_by_one = greedy_answers(&model, &prompts, 6, 1, &Silent).unwrap();
    let batched = greedy_answers(&model, &prompts, 6, 4, &Silent).unwrap();
    assert_eq!(one_by_one.len(), prompts.len());
    assert!(one_by_one.iter().any(|a| !a.is_empty()), "the fixture answers something");
    assert_eq!(one_by_one, batched, "left-padded batches change greedy answers");

    let first = refusals(&model, &prompts, 6, 3, &Silent).unwrap();
    let again = refusals(&model, &prompts, 6, 3, &Silent).unwrap();
    assert_eq!(first, again);
    assert_eq!(first.total, prompts.len());
    assert_eq!(first.answers.iter().map(|a| a.answer.clone()).collect::<Vec<_>>(), batched);
    // The verdicts are the scorer's on the answers.
    for a in &first.answers {
        assert_eq!(a.refusal.as_deref(), scalpel::eval::refusal_marker(&a.answer));
    }
    assert_eq!(first.refused, first.refused_prompts().len());
    // Each answer carries the rules' verdict; the counts add up to them.
    for a in &first.answers {
        assert_eq!(a.verdict, Some(scalpel::eval::judge_answer(&a.prompt, &a.answer).verdict));
    }
    let counts = first.counts();
    assert_eq!((counts.total(), counts.refusal), (first.total, first.refused));
    assert_eq!(first.judge, "rules");

    // Another judge's verdicts replace the rules' everywhere, and the table shows all three.
    struct Evasive;
    impl scalpel::eval::Judge for Evasive {
        fn name(&self) -> String {
            "evasive".into()
        }
        fn judge(&self, e: &[scalpel::eval::Exchange<'_>]) -> scalpel::Result<Vec<scalpel::eval::Judgement>> {
            Ok(e.iter()
                .map(|_| scalpel::eval::Judgement {
                    verdict: scalpel::eval::Verdict::Evasion,
                    reason: "planted".into(),
                })
                .collect())
        }
    }
    let mut report = scalpel::eval::EvalReport {
        refusals: first.clone(),
        over_refusals: first.clone(),
        baseline_refusals: None,
        baseline_over_refusals: None,
        kl: None,
        cross_entropy: None,
        baseline_cross_entropy: None,
    };
    report.rejudge(&Evasive).unwrap();
    let n = prompts.len();
    assert_eq!((report.refusals.refused, report.over_refusals.counts().evasion), (0, n));
    let table = report.markdown("m", None);
    assert!(table.contains(&format!("| harmless prompts: refusal / evasion / compliance | 0 / {n} / 0 |")), "{table}");
    assert!(table.contains(&format!("| over-refusals (refusal + evasion), harmless | {n}/{n} (100%) |")), "{table}");
    assert!(table.contains("by the `evasive` judge"), "{table}");
}

#[test]
fn cross_entropy_is_the_mean_next_token_loss_and_independent_of_batch_size() {
    let tmp = tempfile::tempdir().unwrap();
    let src = ModelDir::open(&common::fixture(tmp.path(), "m", "qwen2", &FixtureOptions::default())).unwrap();
    let (decoder, encoder) = load(&src);
    let none = Interventions::none();
    let model = subject("m", &decoder, &encoder, &none);
    let texts = prompts();
    let batched = cross_entropy(&model, &texts, 4).unwrap();
    let single = cross_entropy(&model, &texts, 1).unwrap();
    assert_eq!(batched.per_text.len(), texts.len());
    for (a, b) in batched.per_text.iter().zip(&single.per_text) {
        assert!((a - b).abs() < 1e-4, "padding changes the loss: {a} vs {b}");
    }
    // Reference: one text at a time, the loss of each next token from the full logits.
    let request = ForwardRequest { capture: None, interventions: &none, logits: LogitsMode::All };
    let (mut total, mut count) = (0f64, 0usize);
    for (text, per_text) in texts.iter().zip(&single.per_text) {
        let ids = encode_texts(encoder.tokenizer(), std::slice::from_ref(text), true).unwrap().remove(0);
        let logits: Vec<Vec<f32>> = decoder
            .forward(std::slice::from_ref(&ids), &[vec![1; ids.len()]], None, &request)
            .unwrap()
            .logits
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        let losses: Vec<f64> = (0..ids.len() - 1)
            .map(|t| {
                let z: f64 = logits[t].iter().map(|&x| f64::from(x).exp()).sum();
                -(f64::from(logits[t][ids[t + 1] as usize]).exp() / z).ln()
            })
            .collect();
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        assert!((mean - per_text).abs() < 1e-6, "{text}: {mean} vs {per_text}");
        total += losses.iter().sum::<f64>();
        count += losses.len();
    }
    assert_eq!(single.tokens, count);
    assert!((single.nats_per_token - total / count as f64).abs() < 1e-9);
    assert!((single.perplexity() - single.nats_per_token.exp()).abs() < 1e-9);
    assert!(single.nats_per_token > 1.0, "a random fixture is far from certain ({})", single.nats_per_token);
}

/// `eval_step` with sources that load their model on demand measures the baseline, drops it,
/// then loads the model, and reports exactly what it reports for models loaded up front.
#[test]
fn eval_with_a_baseline_holds_one_model_at_a_time_and_reports_the_same() {
    use scalpel::eval::{Loaded, OnDemand, SubjectSource};
    use scalpel::pipeline::{eval_step, EvalSets};
    use std::cell::Cell;
    let tmp = tempfile::tempdir().unwrap();
    let options = FixtureOptions { num_layers: 2, ..Default::default() };
    let src = ModelDir::open(&common::fixture(tmp.path(), "qwen2", "qwen2", &options)).unwrap();
    let dirs = common::directions(tmp.path(), src.spec.hidden_size, 2, 1, 1);
    let edited = common::ablate_everything(&src, &dirs, &tmp.path().join("edited"), false);
    let all = prompts();
    let sets = EvalSets {
        harmful: all[..3].to_vec(),
        harmless: all[2..].to_vec(),
        texts: Some(all[..2].to_vec()),
        samples: all[1..3].to_vec(),
    };
    let none = Interventions::none();
    let (d0, e0) = load(&src);
    let (d1, e1) = load(&edited);
    let bar = Silent;
    let (up_front, up_front_samples) = eval_step(
        &mut subject("edited", &d1, &e1, &none),
        Some(&mut subject("original", &d0, &e0, &none) as &mut dyn SubjectSource),
        &sets,
        4,
        2,
        &bar,
    )
    .unwrap();
    drop((d0, e0, d1, e1));

    // Which models were loaded, in order; `live` counts the measurements under way.
    let loads = Cell::new(Vec::new());
    let live = Cell::new(0usize);
    let source = |name: &'static str, model: &'static str| {
        let (loads, model) = (&loads, if model == "src" { &src } else { &edited });
        Nested {
            live: &live,
            inner: OnDemand {
                name: name.into(),
                load: Box::new(move || {
                    let (decoder, encoder) = load(model);
                    let mut seen = loads.take();
                    seen.push(name);
                    loads.set(seen);
                    Ok(Loaded { decoder, encoder, interventions: Interventions::none() })
                }),
            },
        }
    };
    let (mut model, mut baseline) = (source("edited", "edited"), source("original", "src"));
    let (on_demand, on_demand_samples) =
        eval_step(&mut model, Some(&mut baseline as &mut dyn SubjectSource), &sets, 4, 2, &bar).unwrap();
    assert_eq!(loads.take(), ["original", "edited"]);
    assert_eq!(on_demand, up_front);
    assert_eq!(on_demand_samples, up_front_samples);
    assert_eq!(on_demand_samples.len(), 2);
    assert!(up_front.kl.as_ref().is_some_and(|kl| kl.mean > 0.0), "the edit moved nothing: the test proves nothing");
}

/// A source that fails when another one's measurement is under way (both models in memory).
struct Nested<'a> {
    live: &'a std::cell::Cell<usize>,
    inner: scalpel::eval::OnDemand<'a>,
}

impl scalpel::eval::SubjectSource for Nested<'_> {
    fn with_subject(&mut self, f: &mut dyn FnMut(&Subject<'_>) -> scalpel::Result<()>) -> scalpel::Result<()> {
        self.live.set(self.live.get() + 1);
        assert_eq!(self.live.get(), 1, "two models were in memory at once");
        let result = self.inner.with_subject(f);
        self.live.set(self.live.get() - 1);
        result
    }
}
