//! Small side files (config.json, indexes, edit records, chat templates) read with a size cap,
//! so that a huge or endless file is an error instead of exhausting memory.

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Largest JSON side file read whole (config.json, index, records, chat templates).
pub const JSON_CAP: u64 = 64 << 20;

/// Read a text file of at most `cap` bytes (a larger file, or an endless one such as a link to
/// /dev/zero, is an error naming it).
pub fn read_capped(path: &Path, cap: u64) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(Error::Invalid(format!(
            "{}: larger than {} MB; not a side file scalpel reads",
            path.display(),
            cap >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| Error::Invalid(format!("{}: not UTF-8 text", path.display())))
}
