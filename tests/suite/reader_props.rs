//! Property tests of the checkpoint reader (the fuzz targets' little sibling that runs in CI):
//! arbitrary or mutated bytes never panic, and whatever opens reads back consistently.

use proptest::prelude::*;
use scalpel::checkpoint::Checkpoint;
use scalpel::directions::DirectionsFile;

fn valid_file(rows: usize, cols: usize) -> Vec<u8> {
    let a: Vec<u8> = (0..rows * cols).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = (0..cols).flat_map(|i| half::bf16::from_f32(i as f32).to_le_bytes()).collect();
    let views = vec![
        ("w".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, cols], &a).unwrap()),
        ("b".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![cols], &b).unwrap()),
    ];
    safetensors::serialize(views, None).unwrap()
}

fn open(bytes: &[u8]) -> Option<Checkpoint> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let result = Checkpoint::open(dir.path());
    if let Err(e) = &result {
        assert!(e.to_string().contains("model.safetensors"), "error names the file: {e}");
    }
    result.ok().inspect(|c| {
        for name in c.names() {
            let view = c.tensor(name).unwrap();
            assert_eq!(view.data.len(), view.numel() * view.dtype.bitsize() / 8);
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        open(&bytes);
    }

    #[test]
    fn mutated_valid_files_never_panic(rows in 1usize..5, cols in 1usize..5, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut bytes = valid_file(rows, cols);
        let len = bytes.len();
        for (pos, value) in flips {
            bytes[pos % len] = value;
        }
        open(&bytes);
        open(&bytes[..cut % (len + 1)]);
    }

    #[test]
    fn valid_files_round_trip(rows in 1usize..6, cols in 1usize..6) {
        let checkpoint = open(&valid_file(rows, cols)).expect("valid file opens");
        let (values, shape) = checkpoint.read_f32("w").unwrap();
        prop_assert_eq!(shape, vec![rows, cols]);
        prop_assert!(values.iter().enumerate().all(|(i, v)| *v == i as f32));
    }

    #[test]
    fn directions_loader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = DirectionsFile::load(&path) {
            prop_assert!(e.to_string().contains("d.safetensors"));
        }
    }
}
