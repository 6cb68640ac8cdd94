//! SVD analysis on planted structure: shared subspaces score near 1, unrelated ones near the
//! random baseline k/hidden, and a planted direction's alignment is recovered.

use crate::common;

use scalpel::analysis::{alignment, analyse_writers, overlap, writer_subspace, SvdSettings};
use scalpel::arch::WriterKind;
use scalpel::checkpoint::{write_checkpoint, ModelDir, TensorEdit, WriteOptions};
use scalpel::directions::{Direction, DirectionsFile};
use scalpel::fixture::FixtureOptions;
use scalpel::progress::Silent;
use std::collections::BTreeMap;

#[test]
fn planted_sharing_and_alignment_are_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions { num_layers: 4, ..Default::default() });
    let model = ModelDir::open(&src).unwrap();
    // Plant: layer 1's attention writer is a copy of layer 0's.
    let layer0 = model.checkpoint.tensor("model.layers.0.self_attn.o_proj.weight").unwrap().data.to_vec();
    let planted = tmp.path().join("planted");
    let edit = |view: scalpel::checkpoint::TensorRef<'_>| {
        Ok(if view.name == "model.layers.1.self_attn.o_proj.weight" {
            TensorEdit::Replace(layer0.clone())
        } else {
            TensorEdit::Keep
        })
    };
    write_checkpoint(&model, &planted, &WriteOptions::default(), &Silent, &edit).unwrap();
    let model = ModelDir::open(&planted).unwrap();
    let k = 4;
    // A direction planted in layer 2's writing space.
    let w2 = model.spec.writers(&[2], &[WriterKind::Attn]);
    let u2 = writer_subspace(&model, &w2[0], k, true).unwrap();
    let r: Vec<f32> = u2.basis[0].iter().map(|&x| x as f32).collect();
    let dirs = tmp.path().join("d.safetensors");
    DirectionsFile::save(&dirs, &[Direction { name: "resid_pre.2".into(), rows: vec![r] }], &BTreeMap::new()).unwrap();
    let settings =
        SvdSettings { top_k: k, layers: (0..4).collect(), writers: vec![WriterKind::Attn], exact: false, consensus: 2 };
    let a = analyse_writers(&model, &settings, Some(&DirectionsFile::load(&dirs).unwrap()), &Silent).unwrap();
    assert_eq!(a.writers.len(), 4);
    assert!((a.random_baseline - k as f64 / 64.0).abs() < 1e-12);
    assert!(a.overlap[0][1] > 0.99, "copied writers share their subspace: {}", a.overlap[0][1]);
    assert!((a.overlap[2][2] - 1.0).abs() < 1e-9);
    for (i, j) in [(0, 2), (0, 3), (2, 3)] {
        assert!(a.overlap[i][j] < 4.0 * a.random_baseline, "unrelated writers {i},{j}: {}", a.overlap[i][j]);
    }
    let al = &a.alignments[0].per_writer;
    assert!(al[2] > 0.99, "planted direction is writable by layer 2: {}", al[2]);
    assert!(al[0] < 0.8 && al[3] < 0.8, "{al:?}");
    // The consensus direction is used by both copies.
    let c = &a.consensus[0];
    assert!(c.usage[0] > 0.9 && c.usage[1] > 0.9, "{:?}", c.usage);
}

#[test]
fn overlap_and_alignment_math() {
    let e = |i: usize, n: usize| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
    let a = vec![e(0, 8), e(1, 8)];
    let b = vec![e(1, 8), e(2, 8)];
    assert!((overlap(&a, &a) - 1.0).abs() < 1e-12);
    assert!((overlap(&a, &b) - 0.5).abs() < 1e-12);
    let r: Vec<f64> = vec![0.6, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    assert!((alignment(&a, &r) - 1.0).abs() < 1e-12);
    assert!((alignment(&b, &r) - 0.8).abs() < 1e-12);
}

#[test]
fn embedding_subspace_lives_in_the_hidden_space() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    let embed = &model.spec.writers(&[], &[WriterKind::Embed])[0];
    for exact in [true, false] {
        let s = writer_subspace(&model, embed, 8, exact).unwrap();
        assert_eq!(s.basis.len(), 8);
        assert!(s.basis.iter().all(|u| u.len() == model.spec.hidden_size));
        assert!(s.energy > 0.0 && s.energy <= 1.0 + 1e-9);
        assert!(s.singular_values.windows(2).all(|w| w[0] >= w[1] - 1e-9));
    }
}

/// The report leads with the recommended direction and a few others, not a
/// line per entry of the directions file; everything is still in svd.json.
#[test]
fn the_report_summarises_a_large_directions_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions { num_layers: 2, ..Default::default() });
    let model = ModelDir::open(&src).unwrap();
    let mut entries = Vec::new();
    for stream in ["resid_pre", "resid_mid", "resid_post"] {
        for l in 0..24 {
            entries
                .push(Direction { name: format!("{stream}.{l}"), rows: vec![common::unit_vector(64, l as u64 + 100)] });
        }
    }
    let meta = BTreeMap::from([
        ("recommended_layer".to_string(), "7".to_string()),
        ("recommended_stream".to_string(), "resid_mid".to_string()),
    ]);
    let dirs = tmp.path().join("d.safetensors");
    DirectionsFile::save(&dirs, &entries, &meta).unwrap();
    let settings = SvdSettings {
        top_k: 4,
        layers: vec![0, 1],
        writers: vec![WriterKind::Attn, WriterKind::Mlp],
        exact: true,
        consensus: 1,
    };
    let a = analyse_writers(&model, &settings, Some(&DirectionsFile::load(&dirs).unwrap()), &Silent).unwrap();
    let out = tmp.path().join("svd");
    std::fs::create_dir(&out).unwrap();
    let files = scalpel::analysis::write_svd_outputs(&out, &a, "m").unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let lines: Vec<&str> = report.lines().filter(|l| l.contains("`resid_")).collect();
    assert!(lines.len() <= 4, "{} lines name a direction:\n{}", lines.len(), lines.join("\n"));
    assert!(lines[0].contains("recommended direction `resid_mid.7`"), "{}", lines[0]);
    assert!(report.contains("68 more directions"), "{report}");
    let longest = report.lines().filter(|l| l.starts_with("- ")).map(|l| l.chars().count()).max().unwrap();
    assert!(longest < 400, "summary lines stay short ({longest} characters)");
    assert!(files.contains(&"alignment_all.png".to_string()));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("svd.json")).unwrap()).unwrap();
    assert_eq!(json["alignments"].as_array().unwrap().len(), 72);
}
