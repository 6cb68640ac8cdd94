//! Loading arbitrary bytes as a directions file must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalpel::directions::DirectionsFile;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("scalpel-fuzz-dirs-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(file) = DirectionsFile::load(&path) {
        assert!(file.hidden() > 0);
        let _ = file.select(None, None);
    }
});
