//! The one way rnnlm writes a file: a named temp file in the same directory, synced, then
//! renamed over the target, so a reader (or a crash) sees the old file or the new one.

use std::io::Write;
use std::path::Path;

use crate::DataError;

pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |source: std::io::Error| DataError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
