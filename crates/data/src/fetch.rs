//! Finding a dataset's file: a mirror directory, then the cache, then a download.
//! Every file is sha1-verified before use; downloads land in a temp file first.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::registry::shipped_bytes;
use crate::{DataError, DatasetSpec, atomic_write};

/// Where datasets are looked for.
#[derive(Debug, Clone)]
pub struct DataDirs {
    /// A local mirror (`data_dir` in a config, `--data-dir`, or `RNNLM_DATA_DIR`): read-only.
    pub mirror: Option<PathBuf>,
    /// Downloads are kept here (`RNNLM_CACHE_DIR`, else `$XDG_CACHE_HOME/rnnlm`, else `~/.cache/rnnlm`).
    pub cache: PathBuf,
}

impl DataDirs {
    /// The mirror given explicitly wins over `RNNLM_DATA_DIR`.
    pub fn from_env(mirror: Option<PathBuf>) -> Self {
        let env = |key: &str| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let cache = env("RNNLM_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("rnnlm")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("rnnlm")))
            .unwrap_or_else(|| PathBuf::from(".rnnlm-cache"));
        Self {
            mirror: mirror.or_else(|| env("RNNLM_DATA_DIR")),
            cache,
        }
    }
}

/// Hex sha1 of a file's bytes.
pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_verified(path: &Path, expected: &str) -> Result<Vec<u8>, DataError> {
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    verified(bytes, path, expected)
}

fn verified(bytes: Vec<u8>, path: &Path, expected: &str) -> Result<Vec<u8>, DataError> {
    let actual = sha1_hex(&bytes);
    if actual != expected {
        return Err(DataError::Sha1Mismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Returns the verified bytes of the dataset's file: from the mirror, the copy compiled
/// into the binary (shipped datasets), the cache, or a download, in that order.
pub fn fetch_dataset(spec: &DatasetSpec, dirs: &DataDirs) -> Result<Vec<u8>, DataError> {
    if let Some(mirror) = &dirs.mirror {
        let path = mirror.join(&spec.file);
        if path.exists() {
            return read_verified(&path, &spec.sha1);
        }
    }
    if let Some(bytes) = shipped_bytes(&spec.file) {
        return verified(bytes.to_vec(), Path::new(&spec.file), &spec.sha1);
    }
    let cached = dirs.cache.join(&spec.file);
    if cached.exists() {
        return read_verified(&cached, &spec.sha1);
    }
    download(&spec.url, &cached, &spec.sha1).map_err(|e| match e {
        DataError::Download { url, reason } => DataError::Download {
            url,
            reason: format!(
                "{reason}; to work offline, put {} in a directory and point RNNLM_DATA_DIR (or data.data_dir, --data-dir) at it{}",
                spec.file,
                dirs.mirror.as_ref().map_or(String::new(), |m| format!(
                    " (the mirror {} has no {})",
                    m.display(),
                    spec.file
                ))
            ),
        },
        other => other,
    })?;
    read_verified(&cached, &spec.sha1)
}

/// Downloads to `dest` through a temp file in the same directory, verified before the rename.
fn download(url: &str, dest: &Path, sha1: &str) -> Result<(), DataError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let failed = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let mut body = Vec::new();
    ureq::get(url)
        .call()
        .map_err(|e| failed(e.to_string()))?
        .body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .map_err(|e| failed(e.to_string()))?;
    let actual = sha1_hex(&body);
    if actual != sha1 {
        return Err(DataError::Sha1Mismatch {
            path: PathBuf::from(url),
            expected: sha1.to_string(),
            actual,
        });
    }
    atomic_write(dest, &body)
}

/// Reads `member` from a zip archive held in memory.
pub(crate) fn unzip_member(
    archive: &[u8],
    path: &Path,
    member: &str,
) -> Result<Vec<u8>, DataError> {
    let fail = |reason: String| DataError::Archive {
        path: path.to_path_buf(),
        member: member.to_string(),
        reason,
    };
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(archive)).map_err(|e| fail(e.to_string()))?;
    let mut file = zip.by_name(member).map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)
        .map_err(|e| fail(e.to_string()))?;
    Ok(out)
}

/// Bytes as UTF-8 text, or an error naming the file and the first bad offset.
pub(crate) fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String, DataError> {
    String::from_utf8(bytes).map_err(|e| DataError::InvalidUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset;

    /// A fresh directory, removed when the test ends.
    fn temp_dir(tag: &str) -> tempfile::TempDir {
        let prefix = format!("rnnlm-fetch-{tag}-");
        tempfile::Builder::new().prefix(&prefix).tempdir().unwrap()
    }

    #[test]
    fn sha1_of_known_string() {
        // sha1("abc") from FIPS 180-1.
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn mirror_with_wrong_bytes_is_an_error_naming_file_and_both_sha1s() {
        let dir = temp_dir("bad");
        let mirror = dir.path();
        fs::write(mirror.join("timemachine.txt"), "not the time machine").unwrap();
        let dirs = DataDirs {
            mirror: Some(mirror.to_path_buf()),
            cache: mirror.join("cache"),
        };
        let err = fetch_dataset(dataset("time-machine").unwrap(), &dirs).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("timemachine.txt"), "{msg}");
        assert!(
            msg.contains("090b5e7e70c295757f55df93cb0a180b9691891a"),
            "{msg}"
        );
        assert!(msg.contains(&sha1_hex(b"not the time machine")), "{msg}");
    }

    #[test]
    fn cache_is_used_when_the_mirror_lacks_the_file_and_is_verified_too() {
        let dir = temp_dir("cache");
        let dir = dir.path();
        fs::create_dir_all(dir.join("cache")).unwrap();
        fs::write(dir.join("cache").join("jaychou_lyrics.txt.zip"), "tampered").unwrap();
        let dirs = DataDirs {
            mirror: Some(dir.join("empty-mirror")),
            cache: dir.join("cache"),
        };
        let err = fetch_dataset(dataset("jaychou-lyrics").unwrap(), &dirs).unwrap_err();
        assert!(matches!(err, DataError::Sha1Mismatch { .. }), "{err}");
    }

    #[test]
    fn shipped_datasets_need_no_mirror_and_the_others_say_how_to_provide_them() {
        let dir = temp_dir("offline");
        let dir = dir.path();
        let dirs = DataDirs {
            mirror: Some(dir.join("no-such-mirror")),
            cache: dir.join("cache"),
        };
        let tm = fetch_dataset(dataset("time-machine").unwrap(), &dirs).unwrap();
        assert_eq!(sha1_hex(&tm), dataset("time-machine").unwrap().sha1);
        // The download fails (unreachable URL); the error says how to work offline.
        let mut ptb = dataset("ptb").unwrap().clone();
        ptb.url = "http://127.0.0.1:9/ptb.zip".into();
        let msg = fetch_dataset(&ptb, &dirs).unwrap_err().to_string();
        assert!(
            msg.contains("RNNLM_DATA_DIR") && msg.contains("ptb.zip"),
            "{msg}"
        );
        assert!(msg.contains("no-such-mirror"), "{msg}");
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let err = utf8(vec![b'o', b'k', 0xff], Path::new("x.txt")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.txt is not valid UTF-8 (first bad byte at offset 2)"
        );
    }
}
