//! Files that are either whole and checked or absent: written through a temporary file of their
//! own and renamed into place only when their SHA-256 matches, with a sidecar that spares later
//! loads the hashing; and the download of a `.gguf` from a URL the same way.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use super::{FetchError, Progress, Quiet, io_err};

/// Write `dest` through a temporary file of its own (`.<name>.XXXXXX.partial` in the same
/// folder, so concurrent pulls never share one) while hashing what `fill` writes, and rename it
/// into place only when the SHA-256 matches `expected`. On any failure the temporary file is
/// removed; only a killed process can leave one, and no name of that shape is ever loaded.
pub(super) fn write_verified(
    dest: &Path,
    expected: &str,
    total: u64,
    progress: &dyn Progress,
    fill: impl FnOnce(&mut dyn Write, &mut Sha256) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    let temp_path = temp.path().to_path_buf();
    let mut out = io::BufWriter::new(temp);
    let mut hasher = Sha256::new();
    progress.start(total);
    fill(&mut out, &mut hasher)?;
    let temp = out
        .into_inner()
        .map_err(|e| io_err(&temp_path)(e.into_error()))?;
    temp.as_file().sync_all().map_err(io_err(&temp_path))?;
    progress.finish();
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        return Err(FetchError::Checksum {
            path: dest.to_path_buf(),
            expected: expected.into(),
            actual,
        });
    }
    temp.persist(dest).map_err(|e| io_err(dest)(e.error))?;
    record_verified(dest);
    Ok(())
}

pub(super) fn copy_hashing(
    r: &mut dyn Read,
    w: &mut dyn Write,
    hasher: &mut Sha256,
    progress: &dyn Progress,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        progress.advance(n as u64);
        total += n as u64;
    }
}

pub(super) fn sidecar(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".verified");
    PathBuf::from(p)
}

/// `size mtime-nanos sha256` of a file as it is now.
pub(super) fn fingerprint(path: &Path, sha256: &str) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime} {sha256}", meta.len()))
}

pub(super) fn record_verified(path: &Path) {
    if let Ok(actual) = sha256_file(path, &Quiet)
        && let Some(f) = fingerprint(path, &actual)
    {
        let _ = fs::write(sidecar(path), f);
    }
}

/// Check a file against an expected SHA-256, trusting the sidecar when the file is unchanged
/// since it was last verified.
pub fn verify(path: &Path, expected: &str, progress: &dyn Progress) -> Result<(), FetchError> {
    if fs::read_to_string(sidecar(path)).ok().as_deref() == fingerprint(path, expected).as_deref()
        && fingerprint(path, expected).is_some()
    {
        return Ok(());
    }
    progress.phase(&format!("verifying {}", path.display()));
    let actual = sha256_file(path, progress)?;
    if actual != expected {
        let _ = fs::remove_file(sidecar(path));
        return Err(FetchError::Checksum {
            path: path.to_path_buf(),
            expected: expected.into(),
            actual,
        });
    }
    if let Some(f) = fingerprint(path, &actual) {
        let _ = fs::write(sidecar(path), f);
    }
    Ok(())
}

pub fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let mut hasher = Sha256::new();
    progress.start(size);
    copy_hashing(&mut file, &mut io::sink(), &mut hasher, progress).map_err(io_err(path))?;
    progress.finish();
    Ok(hex::encode(hasher.finalize()))
}

/// Download a `.gguf` over HTTP(S) into the models directory, verifying its SHA-256. Returns the
/// stored path; the file name is the URL's last segment.
pub fn pull_url(
    url: &str,
    sha256: &str,
    models_dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let http = |detail: String| FetchError::Http {
        url: url.to_string(),
        detail,
    };
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| n.ends_with(".gguf"))
        .ok_or_else(|| http("the URL must end in a file name ending in .gguf".into()))?;
    let expected = sha256.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(http(format!(
            "--sha256 must be 64 hexadecimal digits, got `{sha256}`"
        )));
    }
    let dest = models_dir.join(name);
    if dest.is_file() && verify(&dest, &expected, progress).is_ok() {
        return Ok(dest);
    }
    fs::create_dir_all(models_dir).map_err(io_err(models_dir))?;
    progress.phase(&format!("downloading {url}"));
    download(url, &expected, &dest, progress)?;
    Ok(dest)
}

/// Download `url` into `dest` through a verified temporary file.
pub(super) fn download(
    url: &str,
    expected: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    let http = |detail: String| FetchError::Http {
        url: url.to_string(),
        detail,
    };
    let mut response = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .and_then(|c| c.get(url).send())
        .and_then(|r| r.error_for_status())
        .map_err(|e| http(e.to_string()))?;
    let total = response.content_length().unwrap_or(0);
    write_verified(dest, expected, total, progress, |out, hasher| {
        copy_hashing(&mut response, out, hasher, progress)
            .map(|_| ())
            .map_err(|e| http(e.to_string()))
    })
}
