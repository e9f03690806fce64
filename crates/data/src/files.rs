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
    // tempfile's errors name the temp file and repeat the io error as their source;
    // the OS error alone, under the target's path, says it once.
    let fail = |e: std::io::Error| DataError::Write {
        path: path.to_path_buf(),
        source: without_temp_path(e),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    if let Some(mode) = mode_for(path) {
        tmp.as_file().set_permissions(mode).map_err(fail)?;
    }
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// `e` without tempfile's " at path <temp file>" (its wrapper keeps the OS error only in
/// its message): the target's path is the one the user knows.
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((reason, _)) if e.raw_os_error().is_none() => std::io::Error::new(e.kind(), reason),
        _ => e,
    }
}

/// A temp file is private (0600); the file it becomes keeps the old file's mode, or
/// gets a regular file's (0644).
#[cfg(unix)]
fn mode_for(path: &Path) -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Some(match std::fs::metadata(path) {
        Ok(old) => old.permissions(),
        Err(_) => std::fs::Permissions::from_mode(0o644),
    })
}

#[cfg(not(unix))]
fn mode_for(_: &Path) -> Option<std::fs::Permissions> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_files_are_readable_by_others_and_keep_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        super::atomic_write(&path, b"one").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o644);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        super::atomic_write(&path, b"two").unwrap();
        assert_eq!(
            (mode(&path), std::fs::read(&path).unwrap()),
            (0o640, b"two".to_vec())
        );
    }
}
