//! Helpers shared by the integration tests.
#![allow(dead_code)]

use scalpel::directions::{Direction, DirectionsFile};
use scalpel::fixture::{write_fixture, FixtureOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Write a fixture of `family` into `dir/name` and return its path.
pub fn fixture(dir: &Path, name: &str, family: &str, options: &FixtureOptions) -> PathBuf {
    let path = dir.join(name);
    write_fixture(family, &path, options).unwrap_or_else(|e| panic!("fixture {family}: {e}"));
    path
}

/// Deterministic pseudo-random unit vector.
pub fn unit_vector(hidden: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(17);
    let mut v: Vec<f32> = (0..hidden)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20001) as f32 / 10000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A directions file with `resid_pre.L` for every layer (k rows each) recommending `recommended`.
pub fn directions(dir: &Path, hidden: usize, layers: usize, k: usize, recommended: usize) -> PathBuf {
    let path = dir.join(format!("directions-{hidden}-{layers}-{k}.safetensors"));
    let entries: Vec<Direction> = (0..layers)
        .map(|l| Direction {
            name: format!("resid_pre.{l}"),
            rows: (0..k).map(|i| unit_vector(hidden, (l * 31 + i) as u64 + 1)).collect(),
        })
        .collect();
    let meta = BTreeMap::from([
        ("recommended_layer".to_string(), recommended.to_string()),
        ("recommended_stream".to_string(), "resid_pre".to_string()),
    ]);
    DirectionsFile::save(&path, &entries, &meta).unwrap();
    path
}

/// Names of the entries of a folder (to check nothing was left behind).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}
