//! Opening arbitrary bytes as a checkpoint must never panic: either a clear error, or a
//! checkpoint whose every tensor can be read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalpel::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("scalpel-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), data).unwrap();
    if let Ok(checkpoint) = Checkpoint::open(&dir) {
        for name in checkpoint.names() {
            let view = checkpoint.tensor(name).unwrap();
            assert_eq!(view.data.len(), view.numel() * view.dtype.bitsize() / 8);
            let _ = view.to_f32();
        }
    }
});
